//! One open store: its connections, its write lock and its queue of
//! writes, and the async and blocking ways in.
//!
//! # Design
//!
//! A store keeps a few idle connections to its file (`Shared::conns`);
//! every read and every write takes one, and gives it back. In WAL mode
//! reads see a consistent snapshot and never wait for a write. Writes run
//! one at a time, each on the thread that holds the store's write lock
//! (`write_lock.rs`): [`Store::write_blocking`] on its caller's thread,
//! which is blocked anyway, and [`Store::write`] on the write pool shared
//! by every store (`writers.rs`), which answers on a oneshot channel as
//! `tokio-rusqlite` does, so a tokio thread never waits on SQLite. An open
//! store costs no thread, and one connection when it is used by one caller
//! at a time. Reads run on the reader threads (`readers.rs` says why not
//! tokio's blocking pool); reads queued together may share one snapshot
//! ([`Snapshot`]), which still begins after each of them was asked for.
//!
//! A store closes when the last handle to it is dropped, or at once with
//! [`Store::close`]: its connections close, and the last to close folds
//! the write-ahead log back into the file, so that the file alone holds
//! the whole store.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Conn, Location};
use crate::blocking::refuse_in_async;
use crate::error::{Result, StoreError};
use crate::item::Registry;
use crate::schema::Tables;
use crate::tx::{Read, Write};
use crate::value::Timestamp;
use crate::write_lock::WriteLock;

/// Idle connections kept by a user's store: one serves a store used by one
/// caller at a time; a site has many user stores open, and each
/// connection is a file descriptor and its page cache.
pub(crate) const USER_CONNS_KEPT: usize = 2;

/// Idle connections kept by the site store, which nearly every request
/// reads (its session, at least). Under load its reads run at once on
/// every reader thread (`readers.rs`), and on tokio's blocking pool too
/// when those are stuck on slow reads; closing the connections a burst
/// opened, only to open them again for the next one, cost more than the
/// reads themselves (measured: `bench/web.sh`).
pub(crate) const SITE_CONNS_KEPT: usize = 16;

/// Writes a pool thread runs for one store before it lets other stores'
/// writes have a turn.
const WRITES_PER_TURN: usize = 16;

/// A write waiting for the pool; told why when it cannot run.
pub(crate) type Job = Box<dyn FnOnce(Result<&mut Writer>) + Send>;

/// Called inside a write transaction (before it commits) with the earliest
/// time that transaction scheduled work for; the site uses it to remember
/// which user stores have work due without opening them.
pub(crate) type ScheduleHook = Box<dyn Fn(&str, Timestamp) -> Result<()> + Send + Sync>;

/// What a store's handles and threads share.
pub(crate) struct Shared {
    pub(crate) name: String,
    /// The store's file; on PostgreSQL, the file it would be, beside which
    /// its attached files are kept.
    pub(crate) path: PathBuf,
    pub(crate) files_dir: PathBuf,
    /// Where the store's rows are.
    pub(crate) location: Location,
    pub(crate) registry: &'static Registry,
    /// Item types whose background upgrade has not finished.
    pub(crate) upgrading: Mutex<HashMap<String, crate::upgrade::Progress>>,
    /// Whether `upgrading` may have entries: upgrades are only ever added
    /// when the store opens, so once it is empty this stays false, and
    /// every query after that skips the lock.
    pub(crate) any_upgrading: AtomicBool,
    /// What the open write transaction has done to the schema, undone if
    /// it rolls back (`upgrade::write_ended`).
    pub(crate) in_write: Mutex<crate::upgrade::InWrite>,
    /// Which item types have a table, and which were checked against it.
    pub(crate) tables: Tables,
    /// Idle connections.
    pub(crate) conns: Mutex<Vec<Conn>>,
    /// Idle connections kept in `conns`.
    pub(crate) conns_kept: usize,
    pub(crate) on_schedule: Option<ScheduleHook>,
    /// Where the changes this store's writes commit are announced.
    pub(crate) announcer: Option<crate::changes::Announcer>,
    /// Set by [`Store::close`]: every use after it is refused.
    pub(crate) closed: AtomicBool,
    /// Who the store is, as a sender of messages; known once it is open.
    pub(crate) identity: std::sync::OnceLock<crate::message::Identity>,
}

impl Shared {
    pub(crate) fn upgrade_pending(&self, name: &str) -> bool {
        if !self.any_upgrading.load(Ordering::Acquire) {
            return false;
        }
        let map = self.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        !map.is_empty() && map.contains_key(name)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// An idle connection, or a new one.
    fn take_conn(&self) -> Result<Conn> {
        match self.idle_conn() {
            Some(c) => Ok(c),
            None => self.location.connect(&self.path),
        }
    }

    /// An idle connection, if there is one.
    fn idle_conn(&self) -> Option<Conn> {
        lock(&self.conns).pop()
    }

    /// Keeps a connection for the next use, unless enough are kept, the
    /// store is closed, or the connection is stuck in a transaction.
    fn give_back(&self, conn: Conn) {
        conn.rollback();
        if conn.in_transaction() || self.closed.load(Ordering::Acquire) {
            // The rollback failed, and every use of it would; or no one
            // may use it again.
            return;
        }
        let mut idle = lock(&self.conns);
        if idle.len() < self.conns_kept {
            idle.push(conn);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The holder of a store's write lock: a connection and the store, for as
/// long as the lock is held. Its connection goes back to the store's idle
/// ones when it is dropped.
pub(crate) struct Writer {
    /// `None` only while dropping.
    conn: Option<Conn>,
    pub(crate) shared: Arc<Shared>,
}

impl Writer {
    pub(crate) fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("writer is open")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.give_back(conn);
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    lock: WriteLock,
    queue: Mutex<Queue>,
}

/// Writes waiting for the pool.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Whether the store is on the pool's run queue (or a pool thread has
    /// it): it is put there once per turn.
    scheduled: bool,
}

/// A handle to one open store (the site's, or a user's). Cheap to clone; the
/// store closes when the last handle is dropped, or at [`Store::close`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.inner.shared.path.display())
    }
}

/// Options for opening a store.
pub(crate) struct OpenOptions {
    pub(crate) name: String,
    pub(crate) create: bool,
    pub(crate) on_schedule: Option<ScheduleHook>,
    pub(crate) announcer: Option<crate::changes::Announcer>,
    /// Idle connections to keep.
    pub(crate) conns_kept: usize,
    pub(crate) location: Location,
}

impl Store {
    /// Opens (creating it if `create`) the store in `path`: checks that it is
    /// a Mantissa store this program can use, and upgrades small stores
    /// (large ones upgrade in the background).
    pub(crate) fn open_with(path: &Path, opts: OpenOptions) -> Result<Store> {
        let registry = Registry::get()?;
        let (conn, first) = opts.location.open(path, opts.create)?;
        let shared = Arc::new(Shared {
            name: opts.name.clone(),
            path: path.to_path_buf(),
            files_dir: files_dir_for(path),
            // Connections of a store on PostgreSQL go back to the site's
            // pool, where any store may use them.
            conns_kept: match opts.location {
                Location::File => opts.conns_kept,
                Location::Postgres { .. } => 0,
            },
            location: opts.location,
            registry,
            upgrading: Mutex::new(HashMap::new()),
            any_upgrading: AtomicBool::new(true),
            in_write: Mutex::new(Default::default()),
            tables: Tables::new(registry),
            conns: Mutex::new(Vec::new()),
            on_schedule: opts.on_schedule,
            announcer: opts.announcer,
            closed: AtomicBool::new(false),
            identity: std::sync::OnceLock::new(),
        });
        let background = crate::schema::prepare(&conn, &shared, first.as_deref())?;
        let upgrading = !background.is_empty();
        shared.any_upgrading.store(upgrading, Ordering::Release);
        *lock(&shared.upgrading) = background;
        // What opening asked, it asks once: its statements need not stay.
        conn.forget_statements();
        shared.give_back(conn);
        let store = Store {
            inner: Arc::new(Inner {
                lock: WriteLock::new(&opts.name),
                shared,
                queue: Mutex::new(Queue::default()),
            }),
        };
        if upgrading {
            // The pool runs the upgrades a batch at a time, between writes.
            lock(&store.inner.queue).scheduled = true;
            crate::writers::schedule(store.clone());
        }
        Ok(store)
    }

    /// Opens a store file on its own, outside a site (for tools and tests).
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Store::open_with(
            path,
            OpenOptions {
                name,
                create: true,
                on_schedule: None,
                announcer: None,
                conns_kept: USER_CONNS_KEPT,
                location: Location::File,
            },
        )
    }

    /// The store's id in the site's PostgreSQL database, if it is there.
    pub(crate) fn postgres_id(&self) -> Option<i64> {
        match &self.inner.shared.location {
            Location::Postgres { id, .. } => Some(*id),
            Location::File => None,
        }
    }

    /// Whether the store is in PostgreSQL (not in a file of its own).
    pub(crate) fn on_postgres(&self) -> bool {
        matches!(self.inner.shared.location, Location::Postgres { .. })
    }

    /// The store's name: "site", or the user's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The store's file. (On PostgreSQL, the place in the site's folder
    /// where copies of its attached files are kept: see [`Store::whereabouts`].)
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Where the store is kept, for people to read: its file, or on
    /// PostgreSQL its id in the site's database.
    pub fn whereabouts(&self) -> String {
        match &self.inner.shared.location {
            Location::File => self.path().display().to_string(),
            Location::Postgres { id, .. } => format!("PostgreSQL, store {id}"),
        }
    }

    /// Runs `f` in a write transaction, without blocking the async runtime
    /// (on the write pool: `writers.rs`). All of it commits, or none of it:
    /// an `Err` (of the caller's own error type: see
    /// [`Store::write_blocking`]) or a panic rolls back. Writes to one store run one at a
    /// time, in the order they were asked for.
    ///
    /// ```
    /// # use mantissa_store::*;
    /// # #[derive(Item)] #[item(name = "doc.w.note", version = 1)] struct Note { text: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), StoreError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = Site::open(dir.path())?.user_store("alice")?;
    /// let id = store.write(|tx| tx.insert(&Note { text: "hello".into() })).await?;
    /// let note = store.read(move |r| r.get(id)).await?;
    /// assert_eq!(note.text, "hello");
    /// # Ok(()) }
    /// ```
    ///
    /// The closure runs on another thread, possibly after the future that
    /// asked for it was dropped, so it must own what it uses (`Send +
    /// 'static`). Inside a write of the same store it fails at once with
    /// [`StoreError::NestedWrite`], having done nothing.
    pub async fn write<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut Write<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.inner.lock.refuse_nested()?;
        if tokio::runtime::Handle::try_current().is_err() {
            // Polled outside any runtime (a pool thread's write, a plain
            // thread's block_on): waiting here is what the caller does
            // anyway, and a write waiting for a pool thread from a pool
            // thread could wait for ever once every one of them did.
            return self.with_writer(|w| run_write(w, f))?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |w: Result<&mut Writer>| {
            let _ = tx.send(w.map_err(E::from).and_then(|w| run_write(w, f)));
        }))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for code that is not async: runs `f` on this
    /// thread, once no other write of the store is running.
    ///
    /// The closure may borrow from the caller. Refused, before anything is
    /// done, on an async runtime's thread ([`StoreError::BlockingInAsync`]:
    /// use `write(..).await` there), inside a write of the same store
    /// ([`StoreError::NestedWrite`]), and where waiting would never end
    /// ([`StoreError::Deadlock`]).
    ///
    /// ```
    /// # use mantissa_store::*;
    /// # #[derive(Item)] #[item(name = "doc.wb.note", version = 1)] struct Note { text: String }
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = Site::open(dir.path())?.user_store("alice")?;
    /// let texts = vec!["one".to_string(), "two".to_string()];
    /// store.write_blocking(|tx| -> Result<()> {
    ///     for text in &texts {
    ///         tx.insert(&Note { text: text.clone() })?;
    ///     }
    ///     Ok(())
    /// })?;
    /// assert_eq!(texts.len(), 2); // still ours
    /// # Ok::<(), StoreError>(())
    /// ```
    ///
    /// The closure's error is the caller's own type, any with
    /// `From<StoreError>`: it rolls the transaction back and comes out as it
    /// went in, to be matched on. The store's refusals (and a panic, as
    /// [`StoreError::Panicked`]) come out converted. A closure that ends in
    /// `Ok(..)` after `?` says its type, as here.
    ///
    /// ```
    /// # use mantissa_store::*;
    /// # #[derive(Item)] #[item(name = "doc.wbe.note", version = 1)] struct Note { text: String }
    /// #[derive(Debug, thiserror::Error)]
    /// enum NoteError {
    ///     #[error("a note says something")]
    ///     Empty,
    ///     #[error(transparent)]
    ///     Store(#[from] StoreError),
    /// }
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = Site::open(dir.path())?.user_store("alice")?;
    /// let refused = store.write_blocking(|tx| -> Result<_, NoteError> {
    ///     for text in ["one", ""] {
    ///         if text.is_empty() {
    ///             return Err(NoteError::Empty);
    ///         }
    ///         tx.insert(&Note { text: text.into() })?;
    ///     }
    ///     Ok(())
    /// });
    /// assert!(matches!(refused, Err(NoteError::Empty)));
    /// assert_eq!(store.read_blocking(|r| r.query::<Note>().count())?, 0); // rolled back
    /// # Ok::<(), StoreError>(())
    /// ```
    pub fn write_blocking<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        refuse_in_async("Store::write_blocking", "Store::write(..).await")?;
        self.with_writer(|w| run_write(w, f))?
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.inner.shared.check_open()?;
        let first = {
            let mut queue = lock(&self.inner.queue);
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if first {
            crate::writers::schedule(self.clone());
        }
        Ok(())
    }

    /// Runs a turn of the writes waiting in the queue, and a batch of a
    /// background upgrade when none are left (on a pool thread).
    pub(crate) fn run_queued(&self) {
        let shared = &self.inner.shared;
        let held = self.inner.lock.acquire();
        let mut writer = held
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|_| self.writer());
        for _ in 0..WRITES_PER_TURN {
            let Some(job) = lock(&self.inner.queue).jobs.pop_front() else {
                break;
            };
            // A write catches its closure's panic; this catches one in the
            // store's own work around it, so that the turn always ends
            // below and the store is put back on the queue or let go.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                job(writer.as_mut().map_err(|e| e.clone()))
            }));
        }
        let idle = lock(&self.inner.queue).jobs.is_empty();
        let mut upgrades_left = false;
        // Background upgrades go on while someone holds the store besides
        // this turn; a store no one uses stops, and resumes where it was
        // when it is opened again.
        if let Ok(w) = writer.as_mut()
            && idle
            && self.handles() > 1
            && !shared.closed.load(Ordering::Acquire)
            && crate::upgrade::has_background_work(shared)
        {
            crate::upgrade::step(w);
            upgrades_left = crate::upgrade::has_background_work(shared);
        }
        drop(writer);
        drop(held);
        let again = {
            let mut queue = lock(&self.inner.queue);
            let again = !queue.jobs.is_empty() || upgrades_left;
            queue.scheduled = again;
            again
        };
        if again {
            crate::writers::schedule(self.clone());
        }
    }

    /// The holder's view of the store: one of its connections.
    fn writer(&self) -> Result<Writer> {
        let shared = &self.inner.shared;
        shared.check_open()?;
        Ok(Writer {
            conn: Some(shared.take_conn()?),
            shared: shared.clone(),
        })
    }

    /// Runs `f` holding the write lock, on this thread, outside any
    /// transaction (maintenance, and the blocking write).
    pub(crate) fn with_writer<R>(&self, f: impl FnOnce(&mut Writer) -> R) -> Result<R> {
        self.inner.shared.check_open()?;
        let _held = self.inner.lock.acquire()?;
        let mut w = self.writer()?;
        Ok(f(&mut w))
    }

    /// [`Store::with_writer`] for the public blocking calls: refused on an
    /// async runtime's thread.
    pub(crate) fn on_writer<R>(
        &self,
        call: &'static str,
        f: impl FnOnce(&mut Writer) -> R,
    ) -> Result<R> {
        refuse_in_async(call, "tokio::task::spawn_blocking")?;
        self.with_writer(f)
    }

    /// Runs `f` in a read transaction, without blocking the async runtime
    /// for longer than tokio's guidance allows: on one of the store's reader
    /// threads (see `readers.rs` for why not tokio's blocking pool), or,
    /// when the reads made here (by this closure's type) are known to take
    /// less time than handing them over, on this thread (but not on a
    /// thread that called [`use_reader_queue`](crate::use_reader_queue), as
    /// a server's connection threads do: there every read is handed over). Reads see a
    /// consistent snapshot that holds every write finished before the read
    /// was first awaited, and do not wait for writes.
    ///
    /// The closure must not wait for other tasks: it may run on the thread
    /// that would run them.
    pub async fn read<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Read<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let shared = &self.inner.shared;
        shared.check_open()?;
        let site = crate::readers::CallSite::of::<F>();
        // Reads known to be quicker than the hand-over run here: while
        // upgrades run a read may have to wait for one, so not then.
        // Only on a connection already open: opening one touches the disk.
        if site.is_quick()
            && !shared.any_upgrading.load(Ordering::Acquire)
            && tokio::runtime::Handle::try_current().is_ok()
            && !crate::readers::hands_over_here()
            && let Some(conn) = shared.idle_conn()
        {
            let snapshot = self.snapshot_on(conn)?;
            // The closure's own time, as on a reader thread: the snapshot's
            // beginning is not the place's.
            let start = std::time::Instant::now();
            let answer = caught(|| f(&snapshot.read()));
            site.took(start.elapsed());
            return answer;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::readers::run(
            self.clone(),
            Box::new(move |read: Result<&Read<'_>>| {
                let start = std::time::Instant::now();
                let answer = read.and_then(|r| unwound(|| f(r)));
                site.took(start.elapsed());
                let went_on = answer.is_ok();
                let _ = tx.send(answer.unwrap_or_else(|e| Err(e.into())));
                went_on
            }),
        );
        rx.await
            .map_err(|_| StoreError::Panicked("a store reader thread failed".into()))?
    }

    /// [`Store::read`] for code that is not async: runs on this thread, and
    /// may borrow from the caller. Refused on an async runtime's thread
    /// ([`StoreError::BlockingInAsync`]: use `read(..).await` there).
    pub fn read_blocking<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Read<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        refuse_in_async("Store::read_blocking", "Store::read(..).await")?;
        let snapshot = self.snapshot()?;
        caught(|| f(&snapshot.read()))
    }

    /// What the store's threads share, for tests that set it up by hand.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Starts a read transaction on one of the store's idle connections
    /// (or a new one).
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        #[cfg(test)]
        SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
        let shared = &self.inner.shared;
        shared.check_open()?;
        self.snapshot_on(shared.take_conn()?)
    }

    /// Starts a read transaction on `conn`, one of the store's.
    fn snapshot_on(&self, conn: Conn) -> Result<Snapshot> {
        let shared = &self.inner.shared;
        let snapshot = Snapshot {
            // Loaded before the transaction begins: once no upgrade is left
            // none is added, so every item the snapshot holds is current.
            upgraded: !shared.any_upgrading.load(Ordering::Acquire),
            store: self.clone(),
            conn: Some(conn),
        };
        snapshot.conn().begin_read()?;
        Ok(snapshot)
    }

    /// Background upgrades still running, with their progress.
    pub fn upgrades_in_progress(&self) -> Vec<crate::upgrade::Progress> {
        let map = lock(&self.inner.shared.upgrading);
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| a.item.cmp(&b.item));
        v
    }

    /// Finishes every background upgrade now, calling `progress` after each
    /// batch. Blocking.
    pub fn finish_upgrades(&self, progress: impl FnMut(&crate::upgrade::Progress)) -> Result<()> {
        self.on_writer("Store::finish_upgrades", move |w| {
            crate::upgrade::finish_all(w, progress)
        })?
    }

    /// Runs SQLite's full integrity check, and the store's own (references
    /// and files). Returns the problems found; empty means healthy.
    /// Blocking.
    pub fn check(&self) -> Result<Vec<String>> {
        self.read_blocking(|r| crate::schema::check(r.conn(), &self.inner.shared))
    }

    /// The directory that holds this store's attached files.
    pub fn files_dir(&self) -> &Path {
        &self.inner.shared.files_dir
    }

    /// Folds the write-ahead log back into the store's file, so that the
    /// file alone holds every committed write (what a copy of the file
    /// needs). Waits for readers for up to the busy timeout; a checkpoint
    /// they hold up stays partial and says so. Blocking.
    pub fn checkpoint(&self) -> Result<()> {
        self.on_writer("Store::checkpoint", |w| w.conn().checkpoint())?
    }

    /// Closes the store now: waits for the write in progress and runs the
    /// writes already asked for, folds the write-ahead log back into the
    /// file, and closes its connections. Every use of any handle to it
    /// afterwards fails with [`StoreError::Closed`]; a read in progress
    /// finishes. Closing a closed store does nothing. Blocking.
    ///
    /// [`Site::close_user_store`](crate::Site::close_user_store) also
    /// forgets it, so that the next use opens it again.
    pub fn close(&self) -> Result<()> {
        refuse_in_async("Store::close", "tokio::task::spawn_blocking")?;
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let held = self.inner.lock.acquire()?;
        let mut writer = self.writer();
        loop {
            let Some(job) = lock(&self.inner.queue).jobs.pop_front() else {
                break;
            };
            job(writer.as_mut().map_err(|e| e.clone()));
        }
        shared.closed.store(true, Ordering::Release);
        let checkpoint = writer
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|w| w.conn().checkpoint());
        drop(writer);
        lock(&shared.conns).clear();
        drop(held);
        checkpoint
    }

    /// Who the store is, as a sender of messages.
    pub(crate) fn identity(&self) -> &crate::message::Identity {
        self.inner
            .shared
            .identity
            .get()
            .expect("an open store knows its identity")
    }

    /// How many handles to the store there are (the site's cache holds
    /// one, a write waiting in the pool another).
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Asks the write pool to fold the write-ahead log back into the file,
    /// after the writes already asked for.
    pub(crate) fn checkpoint_later(&self) {
        let _ = self.submit(Box::new(|w: Result<&mut Writer>| {
            if let Err(e) = w.and_then(|w| w.conn().checkpoint()) {
                tracing::warn!(error = %e, "folding a store's log back into its file failed");
            }
        }));
    }

    /// Whether the store was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::Acquire)
    }
}

/// Where a store's attached files live: beside the store file.
pub(crate) fn files_dir_for(path: &Path) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(".files");
    path.with_file_name(name)
}

/// Snapshots begun, for the tests of how reads share them.
#[cfg(test)]
pub(crate) static SNAPSHOTS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// An open read transaction on one of a store's reader connections. The
/// reader threads run several reads in one when they were all asked for
/// before it began (`readers.rs`); dropping it ends the transaction and
/// gives the connection back.
pub(crate) struct Snapshot {
    store: Store,
    /// `None` only while dropping.
    conn: Option<Conn>,
    /// Whether no background upgrade was left when it began.
    upgraded: bool,
}

impl Snapshot {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("snapshot is open")
    }

    /// What a read runs with.
    pub(crate) fn read(&self) -> Read<'_> {
        Read {
            conn: self.conn(),
            shared: &self.store.inner.shared,
            store: Some(&self.store),
        }
    }

    /// Whether another read may run in this transaction after the ones
    /// that have: not once SQLite has ended it itself (after an I/O error or
    /// a full disk the reads after would each see a different state), and
    /// not while background upgrades run. A read finishes an upgrade
    /// before it reads the type (`Read::ensure_current`), but only in a
    /// snapshot taken after that check; one an earlier read began could
    /// hold the type's old version after the upgrade has ended.
    pub(crate) fn may_go_on(&self) -> bool {
        self.upgraded && self.conn().in_transaction()
    }

    /// Whether this is a snapshot of `store`.
    pub(crate) fn is_of(&self, store: &Store) -> bool {
        Arc::ptr_eq(&self.store.inner, &store.inner)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.inner.shared.give_back(conn);
        }
    }
}

/// Runs `f`, turning its panic into [`StoreError::Panicked`], so that one
/// bad closure (a read, a write, a scheduled run, a listener, an upgrader)
/// cannot take down the thread that runs it or the work after it.
pub(crate) fn caught<R, E: From<StoreError>>(f: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
    unwound(f).unwrap_or_else(|panicked| Err(panicked.into()))
}

/// Runs `f`, and says apart a panic ([`StoreError::Panicked`]) from what
/// `f` returned: a reader thread must know which, whatever the caller's
/// error type.
fn unwound<T>(f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| StoreError::Panicked(panic_message(&p)))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

pub(crate) fn run_write<R, E: From<StoreError>>(
    w: &mut Writer,
    f: impl FnOnce(&mut Write<'_>) -> Result<R, E>,
) -> Result<R, E> {
    w.conn().begin_write()?;
    let mut tx = Write::new(w.conn(), &w.shared);
    let result = caught(|| f(&mut tx));
    let (earliest, touched_files) = (tx.earliest_schedule, tx.touched_files);
    let change = tx.change();
    let outcome = result.and_then(|v| {
        // The site learns of new scheduled work before this commits, so a
        // crash can make it look early, never miss it.
        let hooked = match (earliest, &w.shared.on_schedule) {
            (Some(t), Some(hook)) => hook(&w.shared.name, t),
            _ => Ok(()),
        };
        hooked
            .and_then(|()| w.conn().commit_announcing(change.as_ref()))
            .map(|()| v)
            .map_err(E::from)
    });
    if outcome.is_ok()
        && let (Some(change), Some(announcer), crate::backend::Engine::Sqlite) =
            (change, &w.shared.announcer, w.conn().engine())
    {
        // On PostgreSQL the change comes back through the site's listening
        // connection, with every other node's (`changes.rs`).
        let _ = announcer.send(change);
    }
    if outcome.is_err() {
        w.conn().rollback();
    } else if touched_files {
        // The trash holds what this transaction removed, and what a crash
        // between an earlier commit and its unlinking left (unreferenced
        // files, which only take room until then).
        crate::files::empty_trash(w.conn(), &w.shared);
    }
    crate::upgrade::write_ended(&w.shared, outcome.is_ok());
    outcome
}

/// A handle that does not keep a store open.
#[derive(Clone)]
pub(crate) struct StoreWeak(std::sync::Weak<Inner>);

impl StoreWeak {
    pub(crate) fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }

    pub(crate) fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl Store {
    pub(crate) fn downgrade(&self) -> StoreWeak {
        StoreWeak(Arc::downgrade(&self.inner))
    }
}
