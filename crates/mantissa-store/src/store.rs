//! One open store: its writer thread, its reader connections, and the
//! async and blocking ways in.
//!
//! # Design
//!
//! Each open store has one thread that owns its write connection and runs
//! write transactions one after another, answering each on a oneshot
//! channel, as `tokio-rusqlite` does: a tokio worker never waits on SQLite,
//! and writes to different stores run in parallel on their own threads. Reads
//! run on a few reader threads shared by every store (`readers.rs` says why
//! not tokio's blocking pool) with connections from a per-store pool; in WAL
//! mode they see a consistent snapshot and never wait for the writer. Reads
//! queued together may share one snapshot ([`Snapshot`]), which still
//! begins after each of them was asked for.
//! When the last handle to a store is dropped, its thread ends and its files
//! close.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::backend::Conn;
use crate::error::{Result, StoreError};
use crate::item::{Item, Registry};
use crate::sql;
use crate::tx::{Read, Write};
use crate::value::Timestamp;

/// Idle reader connections kept by a user's store: few, because a site has
/// many user stores open and each connection is a file descriptor.
pub(crate) const USER_READERS_KEPT: usize = 4;

/// Idle reader connections kept by the site store, which nearly every
/// request reads (its session, at least). Under load its reads run at once
/// on every reader thread (`readers.rs`), and on tokio's blocking pool too
/// when those are stuck on slow reads; closing the connections a burst
/// opened, only to open them again for the next one, cost more than the
/// reads themselves (measured: `bench/web.sh`).
pub(crate) const SITE_READERS_KEPT: usize = 16;

pub(crate) type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// Called inside a write transaction (before it commits) with the earliest
/// time that transaction scheduled work for; the site uses it to remember
/// which user stores have work due without opening them.
pub(crate) type ScheduleHook = Box<dyn Fn(&str, Timestamp) -> Result<()> + Send + Sync>;

/// What a store's threads share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) files_dir: PathBuf,
    pub(crate) registry: &'static Registry,
    pub(crate) statements: Statements,
    /// Item types whose background upgrade has not finished.
    pub(crate) upgrading: Mutex<HashMap<String, crate::upgrade::Progress>>,
    /// Whether `upgrading` may have entries: upgrades are only ever added
    /// when the store opens, so once it is empty this stays false, and
    /// every query after that skips the lock.
    pub(crate) any_upgrading: std::sync::atomic::AtomicBool,
    /// Upgrades the writer's open transaction has finished: still pending
    /// for everyone else until it commits (`upgrade::finish`).
    pub(crate) upgraded_in_write: Mutex<Vec<String>>,
    pub(crate) readers: Mutex<Vec<Conn>>,
    /// Idle readers kept in `readers`.
    pub(crate) readers_kept: usize,
    pub(crate) on_schedule: Option<ScheduleHook>,
}

impl Shared {
    pub(crate) fn upgrade_pending(&self, name: &str) -> bool {
        if !self
            .any_upgrading
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return false;
        }
        let map = self.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        !map.is_empty() && map.contains_key(name)
    }
}

/// SQL text per item type, built once.
#[derive(Default)]
pub(crate) struct Statements {
    cache: Mutex<HashMap<(&'static str, Statement), Arc<str>>>,
}

/// The statements kept per item type.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Statement {
    Insert,
    Update,
    /// `SELECT a, b, …, id FROM table` (the id last, so that it can be
    /// popped off a row without moving the values).
    SelectItems,
}

impl Statements {
    pub(crate) fn get<T: Item>(&self, which: Statement) -> Arc<str> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((T::NAME, which))
            .or_insert_with(|| {
                let t = crate::item::ItemRegistration::of::<T>().0;
                match which {
                    Statement::Update => sql::update(&t).into(),
                    Statement::Insert => sql::insert(&t, &t.table(), false).into(),
                    Statement::SelectItems => {
                        let mut cols: Vec<String> =
                            t.attrs.iter().map(|a| sql::ident(a.name)).collect();
                        cols.push("id".into());
                        format!("SELECT {} FROM {}", cols.join(", "), sql::ident(&t.table())).into()
                    }
                }
            })
            .clone()
    }

    pub(crate) fn insert<T: Item>(&self) -> Arc<str> {
        self.get::<T>(Statement::Insert)
    }

    pub(crate) fn update<T: Item>(&self) -> Arc<str> {
        self.get::<T>(Statement::Update)
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) conn: Conn,
    pub(crate) shared: Arc<Shared>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    jobs: Option<Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Inner {
    fn jobs(&self) -> &Sender<Job> {
        self.jobs.as_ref().expect("store is open")
    }
}

impl Drop for Inner {
    /// Closing the channel ends the writer thread once queued work is done;
    /// waiting for it closes the file before the handle is gone, so the
    /// write-ahead log is folded back and the file can be copied or deleted.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take()
            && writer.thread().id() != std::thread::current().id()
        {
            let _ = writer.join();
        }
    }
}

/// A handle to one open store (the site's, or a user's). Cheap to clone; the
/// store closes when the last handle is dropped.
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
    /// Idle reader connections to keep.
    pub(crate) readers_kept: usize,
}

impl Store {
    /// Opens (creating it if `create`) the store in `path`: checks that it is
    /// a Mantissa store this program can use, creates the tables of new item
    /// types, and upgrades small stores (large ones upgrade in the
    /// background).
    pub(crate) fn open_with(path: &Path, opts: OpenOptions) -> Result<Store> {
        let registry = Registry::get()?;
        let conn = Conn::open(path, opts.create)?;
        let files_dir = files_dir_for(path);
        let shared = Arc::new(Shared {
            name: opts.name,
            path: path.to_path_buf(),
            files_dir,
            registry,
            statements: Statements::default(),
            upgrading: Mutex::new(HashMap::new()),
            any_upgrading: std::sync::atomic::AtomicBool::new(true),
            upgraded_in_write: Mutex::new(Vec::new()),
            readers: Mutex::new(Vec::new()),
            readers_kept: opts.readers_kept,
            on_schedule: opts.on_schedule,
        });
        let background = crate::schema::prepare(&conn, &shared)?;
        shared
            .any_upgrading
            .store(!background.is_empty(), std::sync::atomic::Ordering::Release);
        *shared.upgrading.lock().unwrap_or_else(|e| e.into_inner()) = background;
        crate::files::empty_trash(&conn, &shared);
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let writer = Writer {
            conn,
            shared: shared.clone(),
        };
        let writer = std::thread::Builder::new()
            .name(format!("store:{}", shared.name))
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::io(path, e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                jobs: Some(jobs),
                writer: Some(writer),
            }),
        })
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
                readers_kept: USER_READERS_KEPT,
            },
        )
    }

    /// The store's name: "site", or the user's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Runs `f` in a write transaction on the store's thread, without
    /// blocking the async runtime. All of it commits, or none of it: an `Err`
    /// or a panic rolls back.
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
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Write<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, tx)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for code that is not async: blocks this thread until
    /// the transaction is done. Do not call it from inside the async runtime.
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Write<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, tx)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    fn submit<R, F>(&self, f: F, answer: tokio::sync::oneshot::Sender<Result<R>>) -> Result<()>
    where
        F: FnOnce(&mut Write<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.inner
            .jobs()
            .send(Box::new(move |w: &mut Writer| {
                let _ = answer.send(run_write(w, f));
            }))
            .map_err(|_| StoreError::Closed)
    }

    /// Runs `f` on the writer thread outside any transaction (maintenance).
    pub(crate) fn on_writer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .jobs()
            .send(Box::new(move |w: &mut Writer| {
                let _ = tx.send(f(w));
            }))
            .map_err(|_| StoreError::Closed)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)
    }

    /// Runs `f` in a read transaction on one of the store's reader threads
    /// (see `readers.rs` for why not tokio's blocking pool). Reads see a
    /// consistent snapshot that holds every write finished before the read
    /// was first awaited, and do not wait for writes.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Read<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::readers::run(
            self.clone(),
            Box::new(move |read: Result<&Read<'_>>| {
                let answer = read.and_then(|r| caught(|| f(r)));
                let went_on = !matches!(answer, Err(StoreError::Panicked(_)));
                let _ = tx.send(answer);
                went_on
            }),
        );
        rx.await
            .map_err(|_| StoreError::Panicked("a store reader thread failed".into()))?
    }

    /// [`Store::read`] for code that is not async: runs on this thread.
    pub fn read_blocking<R>(&self, f: impl FnOnce(&Read<'_>) -> Result<R>) -> Result<R> {
        let snapshot = self.snapshot()?;
        caught(|| f(&snapshot.read()))
    }

    /// What the store's threads share, for tests that set it up by hand.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Starts a read transaction on one of the store's idle reader
    /// connections (or a new one).
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        #[cfg(test)]
        SNAPSHOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = &self.inner.shared;
        let conn = {
            let mut pool = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Conn::open(&shared.path, false)?;
                c.batch("PRAGMA query_only = 1")?;
                c
            }
        };
        let snapshot = Snapshot {
            // Loaded before the transaction begins: once no upgrade is left
            // none is added, so every item the snapshot holds is current.
            upgraded: !shared
                .any_upgrading
                .load(std::sync::atomic::Ordering::Acquire),
            store: self.clone(),
            conn: Some(conn),
        };
        snapshot.conn().begin_read()?;
        Ok(snapshot)
    }

    /// Background upgrades still running, with their progress.
    pub fn upgrades_in_progress(&self) -> Vec<crate::upgrade::Progress> {
        let map = self
            .inner
            .shared
            .upgrading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by(|a, b| a.item.cmp(&b.item));
        v
    }

    /// Finishes every background upgrade now, calling `progress` after each
    /// batch.
    pub fn finish_upgrades(
        &self,
        progress: impl FnMut(&crate::upgrade::Progress) + Send + 'static,
    ) -> Result<()> {
        self.on_writer(move |w| crate::upgrade::finish_all(w, progress))?
    }

    /// Runs SQLite's full integrity check, and the store's own (references
    /// and files). Returns the problems found; empty means healthy.
    pub fn check(&self) -> Result<Vec<String>> {
        self.read_blocking(|r| crate::schema::check(r.conn(), &self.inner.shared))
    }

    /// The directory that holds this store's attached files.
    pub fn files_dir(&self) -> &Path {
        &self.inner.shared.files_dir
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
            requester: Some(self.store.inner.jobs()),
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
        let Some(conn) = self.conn.take() else { return };
        conn.rollback();
        if conn.in_transaction() {
            // The rollback failed; every read on this connection would.
            return;
        }
        let shared = &self.store.inner.shared;
        let mut pool = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < shared.readers_kept {
            pool.push(conn);
        }
    }
}

/// Runs `f`, turning its panic into [`StoreError::Panicked`].
fn caught<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| StoreError::Panicked(panic_message(&p)))?
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

pub(crate) fn run_write<R>(
    w: &mut Writer,
    f: impl FnOnce(&mut Write<'_>) -> Result<R>,
) -> Result<R> {
    w.conn.begin_write()?;
    let mut tx = Write::new(&w.conn, &w.shared);
    let result = caught(|| f(&mut tx));
    let earliest = tx.earliest_schedule;
    let outcome = result.and_then(|v| {
        // The site learns of new scheduled work before this commits, so a
        // crash can make it look early, never miss it.
        let hooked = match (earliest, &w.shared.on_schedule) {
            (Some(t), Some(hook)) => hook(&w.shared.name, t),
            _ => Ok(()),
        };
        hooked.and_then(|()| w.conn.commit()).map(|()| v)
    });
    if outcome.is_err() {
        w.conn.rollback();
    } else {
        crate::files::empty_trash(&w.conn, &w.shared);
    }
    crate::upgrade::write_ended(&w.shared, outcome.is_ok());
    outcome
}

fn writer_loop(mut w: Writer, rx: Receiver<Job>) {
    loop {
        let job = if crate::upgrade::has_background_work(&w.shared) {
            match rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    crate::upgrade::step(&mut w);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        job(&mut w);
    }
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
