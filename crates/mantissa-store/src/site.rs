//! A site: the folder that holds the site store and every user's store.
//!
//! ```text
//! site/
//!   site.sqlite          the site store: accounts, ports, configuration
//!   site.files/          files attached to site items
//!   users/alice.sqlite   alice's own store
//!   users/alice.files/
//! ```
//!
//! User stores open on demand and stay open in a bounded cache, so ten
//! thousand users cost ten thousand files on disk, not ten thousand open
//! handles. A store evicted from the cache but still held by someone is
//! found again rather than opened twice.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use lru::LruCache;

use crate::backend::{Location, PgPool, postgres};
use crate::changes::{Announcer, announcer};
use crate::error::{Result, StoreError};
use crate::store::{OpenOptions, Store, StoreWeak};
use crate::value::{Timestamp, Value};

/// User stores kept open by default.
pub const DEFAULT_OPEN_STORES: usize = 128;

pub(crate) const SITE_FILE: &str = "site.sqlite";
const USERS_DIR: &str = "users";

struct Inner {
    root: PathBuf,
    /// The site's PostgreSQL database, when its stores are there and not
    /// in files.
    pool: Option<PgPool>,
    /// Where the stores' writes announce their changes (`changes.rs`).
    announcer: Announcer,
    store: Store,
    cache: Mutex<Cache>,
}

struct Cache {
    open: LruCache<String, Store>,
    live: HashMap<String, StoreWeak>,
}

/// An open site. Cheap to clone.
#[derive(Clone)]
pub struct Site {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Site({})", self.inner.root.display())
    }
}

/// Checks a user store name: 1 to 64 of `a-z 0-9 . _ -`, starting with a
/// letter or digit. Names become file names, so nothing else is allowed.
pub fn check_store_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("it must be 1 to 64 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return bad("use only lowercase letters, digits, '.', '_' and '-'");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    Ok(())
}

impl Site {
    /// Opens the site in `dir`, creating the folder and the site store if
    /// they do not exist yet.
    pub fn open(dir: impl AsRef<Path>) -> Result<Site> {
        let root = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join(USERS_DIR)).map_err(|e| StoreError::io(&root, e))?;
        Site::open_at(root, true, None, announcer())
    }

    /// Opens the site whose stores are in the PostgreSQL database at `url`
    /// (`postgres://user@host:port/database`), making its tables if they
    /// are not there. `dir` holds what stays on this machine: for now,
    /// attached files. Several processes may open one site; each store's
    /// writes still run one at a time across all of them.
    ///
    /// The database's role must be an ordinary one, not a superuser or
    /// one with `BYPASSRLS`: row-level security keeps each user's rows
    /// apart, and those roles are not held to it.
    pub fn open_postgres(dir: impl AsRef<Path>, url: &str) -> Result<Site> {
        let root = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join(USERS_DIR)).map_err(|e| StoreError::io(&root, e))?;
        postgres::off_runtime(|| {
            let pool = PgPool::new(url, POSTGRES_CONNECTIONS)?;
            postgres::make_site_tables(&pool, crate::item::Registry::get()?)?;
            let announcer = announcer();
            // A store deleted on another node is closed here too: the
            // site, once it is open, is told (a handle to it that
            // someone still holds fails its writes, see `drop_store`).
            let opened: Arc<std::sync::OnceLock<Weak<Inner>>> = Arc::default();
            let told = opened.clone();
            postgres::listen_for_changes(url, &announcer, move |name, id| {
                let Some(inner) = told.get().and_then(Weak::upgrade) else {
                    return;
                };
                let (site, name) = (Site { inner }, name.to_string());
                // Closing a store blocks: not on the listener's thread.
                std::thread::spawn(move || site.forget_deleted(&name, id));
            })?;
            let site = Site::open_at(root, true, Some(pool.clone()), announcer)?;
            let _ = opened.set(Arc::downgrade(&site.inner));
            if postgres::upgrades::any_pending(&pool)? {
                let weak = Arc::downgrade(&site.inner);
                std::thread::Builder::new()
                    .name("mantissa-upgrades".into())
                    .spawn(move || move_upgraded_items(&pool, &weak))
                    .map_err(|e| StoreError::io(Path::new("mantissa-upgrades thread"), e))?;
            }
            Ok(site)
        })
    }

    /// Opens an existing site; an error if `dir` holds none.
    pub fn open_existing(dir: impl AsRef<Path>) -> Result<Site> {
        let root = dir.as_ref().to_path_buf();
        if !root.join(SITE_FILE).is_file() {
            return Err(StoreError::Io {
                path: root,
                reason: "no Mantissa site here (no site.sqlite); create one with `mantissa init`"
                    .into(),
            });
        }
        Site::open_at(root, false, None, announcer())
    }

    fn open_at(
        root: PathBuf,
        create: bool,
        pool: Option<PgPool>,
        announcer: Announcer,
    ) -> Result<Site> {
        let store = Store::open_with(
            &root.join(SITE_FILE),
            OpenOptions {
                name: "site".into(),
                create,
                on_schedule: None,
                announcer: Some(announcer.clone()),
                conns_kept: crate::store::SITE_CONNS_KEPT,
                location: location(pool.as_ref(), SITE_KEY, true)?.expect("made"),
            },
        )?;
        Ok(Site {
            inner: Arc::new(Inner {
                root,
                pool,
                announcer,
                store,
                cache: Mutex::new(Cache {
                    open: LruCache::new(NonZeroUsize::new(DEFAULT_OPEN_STORES).expect("nonzero")),
                    live: HashMap::new(),
                }),
            }),
        })
    }

    /// The site's folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The site store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Sets how many user stores stay open (at least one).
    pub fn set_open_stores(&self, n: usize) {
        let mut cache = self.cache();
        cache
            .open
            .resize(NonZeroUsize::new(n.max(1)).expect("nonzero"));
    }

    /// How many user stores are open now (cached or still held).
    pub fn open_stores(&self) -> usize {
        let mut cache = self.cache();
        cache.live.retain(|_, w| w.alive());
        cache.live.len()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file of a user's store (which may not exist yet).
    pub fn user_store_path(&self, name: &str) -> Result<PathBuf> {
        check_store_name(name)?;
        Ok(self
            .inner
            .root
            .join(USERS_DIR)
            .join(format!("{name}.sqlite")))
    }

    /// Whether a user store exists.
    pub fn has_user_store(&self, name: &str) -> Result<bool> {
        let path = self.user_store_path(name)?;
        match &self.inner.pool {
            None => Ok(path.is_file()),
            Some(pool) => {
                Ok(
                    postgres::off_runtime(|| postgres::store_id(pool, &user_key(name), false))?
                        .is_some(),
                )
            }
        }
    }

    pub(crate) fn announcer(&self) -> &Announcer {
        &self.inner.announcer
    }

    /// Finishes the upgrades of item types that a site on PostgreSQL runs
    /// store by store in the background (each node does meanwhile): moves
    /// every store's items that have not moved yet, then ends the moves.
    /// Returns how many stores it moved. Nothing to do on SQLite, where
    /// [`Store::finish_upgrades`] finishes a store's. Blocking.
    pub fn finish_upgrades(&self) -> Result<usize> {
        let Some(pool) = &self.inner.pool else {
            return Ok(0);
        };
        postgres::off_runtime(|| {
            let (mut last, mut moved) = (None, 0);
            loop {
                match move_step(pool, self, &mut last)? {
                    MoveStep::Moved => moved += 1,
                    MoveStep::Waited => {}
                    MoveStep::Done => return Ok(moved),
                }
            }
        })
    }

    /// Whether the site's stores are in PostgreSQL (not in files).
    pub fn on_postgres(&self) -> bool {
        self.inner.pool.is_some()
    }

    /// A user's store, created on first use.
    ///
    /// Opening a cold store touches the disk (well under a millisecond to a
    /// few); call it from blocking code, or accept that brief wait.
    pub fn user_store(&self, name: &str) -> Result<Store> {
        self.user_store_inner(name, true)?
            .ok_or_else(|| StoreError::Io {
                path: self.user_store_path(name).unwrap_or_default(),
                reason: "no such store".into(),
            })
    }

    /// A user's store, if it exists.
    pub fn existing_user_store(&self, name: &str) -> Result<Option<Store>> {
        // A file may be deleted behind an open store's back (the command
        // line beside a running server): looked for each time. In
        // PostgreSQL, opening asks whether the store is there, and a store
        // open here is closed when it is deleted on any node: an open one
        // is handed out with no question asked.
        if self.inner.pool.is_none() && !self.has_user_store(name)? {
            return Ok(None);
        }
        self.user_store_inner(name, false)
    }

    /// The store `name`, from the cache of open stores or opened (made if
    /// `create`); `None` when it does not exist and is not to be made.
    fn user_store_inner(&self, name: &str, create: bool) -> Result<Option<Store>> {
        let path = self.user_store_path(name)?;
        if self.inner.store.is_closed() {
            // The site was closed ([`Site::close`]).
            return Err(StoreError::Closed);
        }
        {
            let mut cache = self.cache();
            if let Some(s) = cache.open.get(name) {
                return Ok(Some(s.clone()));
            }
            if let Some(s) = cache.live.get(name).and_then(StoreWeak::upgrade) {
                let evicted = cache.open.push(name.to_string(), s.clone());
                drop(cache);
                leave_cache(evicted);
                return Ok(Some(s));
            }
        }
        // Opening touches the disk: done without the cache's lock, so that
        // stores already open are handed out meanwhile.
        let site_store = self.inner.store.clone();
        let store = postgres::off_runtime(|| {
            let Some(location) = location(self.inner.pool.as_ref(), &user_key(name), create)?
            else {
                return Ok(None);
            };
            Store::open_with(
                &path,
                OpenOptions {
                    name: name.to_string(),
                    create,
                    on_schedule: Some(Box::new(move |store_name, due| {
                        note_due(&site_store, store_name, due)
                    })),
                    announcer: Some(self.inner.announcer.clone()),
                    conns_kept: crate::store::USER_CONNS_KEPT,
                    location,
                },
            )
            .map(Some)
        })?;
        let Some(store) = store else {
            return Ok(None);
        };
        let mut cache = self.cache();
        if let Some(s) = cache.live.get(name).and_then(StoreWeak::upgrade) {
            // Another thread opened it first: use theirs.
            drop(cache);
            return Ok(Some(s));
        }
        if cache.live.len() > 4 * cache.open.cap().get() {
            cache.live.retain(|_, w| w.alive());
        }
        cache.live.insert(name.to_string(), store.downgrade());
        // A store pushed out of the cache closes after the lock is
        // released.
        let evicted = cache.open.push(name.to_string(), store.clone());
        drop(cache);
        leave_cache(evicted);
        Ok(Some(store))
    }

    /// The names of every user store, sorted.
    pub fn user_names(&self) -> Result<Vec<String>> {
        if let Some(pool) = &self.inner.pool {
            return postgres::off_runtime(|| postgres::user_names(pool, USER_PREFIX));
        }
        let dir = self.inner.root.join(USERS_DIR);
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(StoreError::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".sqlite")) else {
                continue;
            };
            if check_store_name(name).is_ok() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Bytes on disk of the site's stores: each store's database with its
    /// write-ahead log and its attached files. Nothing else in the site's
    /// folder counts (themes, exports, or a checkout the site was made in).
    /// On PostgreSQL: the size of the site's database on the server.
    /// Blocking.
    pub fn disk_usage(&self) -> Result<u64> {
        if let Some(pool) = &self.inner.pool {
            return postgres::database_bytes(pool);
        }
        fn tree(path: &Path) -> u64 {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => std::fs::read_dir(path)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok())
                            .map(|e| tree(&e.path()))
                            .sum()
                    })
                    .unwrap_or(0),
                Ok(m) if m.is_file() => m.len(),
                _ => 0,
            }
        }
        let mut stores = vec![self.inner.root.join(SITE_FILE)];
        for name in self.user_names()? {
            stores.push(self.user_store_path(&name)?);
        }
        Ok(stores
            .iter()
            .map(|db| {
                let with = |suffix: &str| {
                    let mut p = db.clone().into_os_string();
                    p.push(suffix);
                    tree(Path::new(&p))
                };
                tree(db) + with("-wal") + with("-shm") + tree(&crate::store::files_dir_for(db))
            })
            .sum())
    }

    /// Closes a user's store now, if it is open ([`Store::close`]): every
    /// handle to it fails from now on with [`StoreError::Closed`], and the
    /// next [`Site::user_store`] opens it again. Returns whether it was
    /// open. Blocking.
    pub fn close_user_store(&self, name: &str) -> Result<bool> {
        check_store_name(name)?;
        let store = {
            let mut cache = self.cache();
            let cached = cache.open.pop(name);
            let live = cache.live.remove(name).and_then(|w| w.upgrade());
            cached.or(live)
        };
        match store {
            Some(store) => store.close().map(|()| true),
            None => Ok(false),
        }
    }

    /// Closes the open store `name` if it is the store of id `id`, which
    /// was deleted (by another node): the next [`Site::user_store`] opens
    /// the store of that name now, if there is one.
    fn forget_deleted(&self, name: &str, id: i64) {
        let store = {
            let mut cache = self.cache();
            let is_it = |s: &Store| s.postgres_id() == Some(id);
            let cached = cache.open.peek(name).is_some_and(is_it);
            let live = cache
                .live
                .get(name)
                .and_then(StoreWeak::upgrade)
                .filter(is_it);
            if cached {
                cache.open.pop(name);
            }
            if live.is_some() || cached {
                cache.live.remove(name);
            }
            live
        };
        if let Some(store) = store
            && let Err(e) = store.close()
        {
            tracing::warn!(store = name, error = %e, "closing a store deleted elsewhere failed");
        }
    }

    /// Closes every open store, user stores first and the site store last
    /// ([`Store::close`]), so that each store's file holds all of it. For
    /// a clean shutdown: every use of the site or its stores afterwards
    /// fails with [`StoreError::Closed`]. Blocking.
    pub fn close(&self) -> Result<()> {
        let stores: Vec<Store> = {
            let mut cache = self.cache();
            let mut stores: Vec<Store> = Vec::new();
            while let Some((_, s)) = cache.open.pop_lru() {
                stores.push(s);
            }
            stores.extend(cache.live.drain().filter_map(|(_, w)| w.upgrade()));
            stores
        };
        let mut first_error = None;
        for store in stores.iter().chain(std::iter::once(self.store())) {
            if let Err(e) = store.close() {
                tracing::error!(store = store.name(), error = %e, "closing a store failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes a user's store and its files from disk. The store is closed
    /// first: a handle to it still held elsewhere fails from then on
    /// (instead of writing to a file no one will read again). Blocking.
    pub fn delete_user_store(&self, name: &str) -> Result<()> {
        let path = self.user_store_path(name)?;
        self.close_user_store(name)?;
        if let Some(pool) = &self.inner.pool {
            postgres::off_runtime(|| postgres::drop_store(pool, &user_key(name)))?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(PathBuf::from(p), e)),
            }
        }
        let files = crate::store::files_dir_for(&path);
        if files.exists() {
            std::fs::remove_dir_all(&files).map_err(|e| StoreError::io(files, e))?;
        }
        self.inner.store.write_blocking(|tx| {
            tx.conn()
                .execute(
                    "DELETE FROM _due_stores WHERE store = ?",
                    &[Value::Text(name.into())],
                )
                .map(drop)
        })
    }
}

/// A store has left the cache of open stores. It closes when its last
/// handle is dropped, which folds its write-ahead log into its file; one
/// still held elsewhere stays open, and its log is folded back now, by the
/// write pool, so that its file is whole while it sits unused.
fn leave_cache(evicted: Option<(String, Store)>) {
    let Some((_, store)) = evicted else { return };
    if store.handles() > 1 {
        store.checkpoint_later();
    }
}

/// Records in the site store that `store` has work due at `due` (or
/// earlier). Runs inside the user store's write, before its commit.
fn note_due(site: &Store, store: &str, due: Timestamp) -> Result<()> {
    let store = store.to_string();
    site.write_blocking(move |tx| {
        crate::schema::Internal::DueStores.ensure(tx.conn())?;
        tx.conn().execute(
            "INSERT INTO _due_stores (store, due) VALUES (?, ?)
             ON CONFLICT (store) DO UPDATE SET due = CASE WHEN excluded.due < _due_stores.due
                 THEN excluded.due ELSE _due_stores.due END",
            &[Value::Text(store.into()), Value::Integer(due.as_micros())],
        )?;
        Ok(())
    })
}

/// On PostgreSQL, the items of types upgraded store by store
/// (`backend/postgres/upgrades.rs`) that no store has moved yet on
/// opening: each store that has some is opened, a store at a time, which
/// moves them; then the moves are ended. Run by a thread of each node
/// while the site is open (it stops when the site is closed, or at an
/// error, logged: the next start goes on), and by
/// [`Site::finish_upgrades`].
fn move_upgraded_items(pool: &PgPool, site: &Weak<Inner>) {
    let mut last = None;
    loop {
        let Some(inner) = site.upgrade() else {
            return;
        };
        match move_step(pool, &Site { inner }, &mut last) {
            Ok(MoveStep::Moved | MoveStep::Waited) => {}
            Ok(MoveStep::Done) => return,
            Err(e) => {
                tracing::warn!(error = %e, "moving upgraded items stopped; the next start goes on");
                return;
            }
        }
    }
}

/// What one [`move_step`] did.
enum MoveStep {
    /// Opened a store, which moved its items.
    Moved,
    /// Found no store to move but a move not ended: one is moving on
    /// another node; waited a moment.
    Waited,
    /// Ended every move: nothing is left.
    Done,
}

/// Moves one store's items, or ends the moves if no store has any left.
/// `last` is the store moved the step before.
fn move_step(pool: &PgPool, site: &Site, last: &mut Option<String>) -> Result<MoveStep> {
    match postgres::upgrades::next_store(pool)? {
        // Opened, and still not moved: something else is wrong.
        Some(key) if last.as_ref() == Some(&key) => Err(StoreError::Database {
            path: PathBuf::from(format!("postgresql:{key}")),
            reason: "its items of an upgraded type did not move when it was opened".into(),
        }),
        Some(key) => {
            // The site's store moved its items when the site opened.
            if let Some(name) = key.strip_prefix(USER_PREFIX) {
                site.existing_user_store(name)?;
            }
            *last = Some(key);
            Ok(MoveStep::Moved)
        }
        None => {
            if !postgres::upgrades::finish(pool)? {
                return Ok(MoveStep::Done);
            }
            // A store is moving on another node: its turn is next.
            std::thread::sleep(std::time::Duration::from_millis(100));
            *last = None;
            Ok(MoveStep::Waited)
        }
    }
}

/// Connections a site on PostgreSQL keeps to its database, at most: the
/// store's threads that wait on it (the write pool, the reader threads)
/// are fewer.
const POSTGRES_CONNECTIONS: usize = 32;

/// What the site's stores are called in PostgreSQL's `_stores`.
const SITE_KEY: &str = "site";
pub(crate) const USER_PREFIX: &str = "user/";

fn user_key(name: &str) -> String {
    format!("{USER_PREFIX}{name}")
}

/// Where the store called `key` is: in its file, or under its id in the
/// site's database (given one, if `create`; `None` if it has none).
fn location(pool: Option<&PgPool>, key: &str, create: bool) -> Result<Option<Location>> {
    let Some(pool) = pool else {
        return Ok(Some(Location::File));
    };
    Ok(
        postgres::store_id(pool, key, create)?.map(|id| Location::Postgres {
            pool: pool.clone(),
            id,
            label: PathBuf::from(format!("postgresql:{key}")),
        }),
    )
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Site>();
    is::<Store>();
    let _: Option<Weak<()>> = None;
}
