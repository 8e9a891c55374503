//! The PostgreSQL connection: the store's portable SQL, run on
//! `tokio-postgres` through a pool of the backend's own ([`PgPool`]), from the store's
//! own threads.
//!
//! This is the part of the PostgreSQL backend that the rest will stand on
//! (see [`crate::backend`] for what a user store, statements, transactions
//! and types are there). It offers what the SQLite connection offers the
//! store — `batch`, `execute`, `insert`, `rows`, `scalar`, transactions —
//! with the same [`Value`]s in and out, so that the layers above can be
//! pointed at either.
//!
//! Why block here, on an async driver: the store runs a transaction as a
//! closure on its own threads (the writer pool, the reader threads), never
//! on an async worker, and the closure reads and writes synchronously, as
//! it does on SQLite. Those threads wait for PostgreSQL as they wait for
//! the disk, so nothing here ever blocks a server's workers. Each
//! connection has a one-thread runtime of its own ([`Link`]), which the
//! thread that waits for an answer drives: that thread writes the request
//! and reads the answer itself. (The connections' I/O ran on one runtime
//! thread of the backend's before: every round trip then woke that thread
//! to send the request and again to read the answer, and it woke the
//! waiting thread, two more thread wake-ups a round trip than a program
//! that drives its connection where it waits; on two busy cores they cost
//! more than the round trip itself: `bench/README.md`, "Store on
//! PostgreSQL".)
//! A call from an async worker is refused at once
//! ([`StoreError::BlockingInAsync`]), as the blocking calls of the store
//! are.
//!
//! Statements keep SQLite's `?` parameters; they are numbered here
//! (`$1`, `$2`…, [`numbered`]), outside quoted text and names.
//!
//! A statement that fails inside a transaction leaves the transaction
//! going, as on SQLite, where a closure may catch a refused insert and go
//! on: PostgreSQL would abort the whole transaction, so each statement in
//! one runs under a savepoint (sent together with the statement, in one
//! round trip), rolled back to when it fails. But an insert that nothing
//! in the database can refuse runs without one
//! ([`crate::item::Registry::insert_refusable`]: no unique index, no
//! reference to check, a value for every column that needs one, no NUL in
//! text): a savepoint and its release are statements the server parses
//! and runs, and a subtransaction, together costing about what a small
//! insert does (`postgres_insert_10k` went from 0.53–0.68 of the
//! reference to 0.83–0.90). What could still refuse such an insert is a
//! failing server (a full disk, a deadlock with a change of the shared
//! tables); the transaction then cannot commit ([`PgConn::commit`] says
//! why), as after a failed savepoint, so a closure that catches that
//! error and goes on is told at its commit.
//!
//! Round trips are what a small operation costs here (a small indexed
//! query takes the server tens of microseconds; each round trip on the
//! loopback about as much again), so nothing waits for an answer that can
//! travel with the next request (measured by `benches/postgres.rs`;
//! `bench/README.md`, "Store on PostgreSQL"):
//!
//! - a statement's savepoint is released with the next statement's
//!   savepoint, or before whatever the connection sends next (a batch; a
//!   commit releases it itself), not in a round trip of its own;
//! - a transaction begins with its first statement, in the same round
//!   trip: a read's snapshot is taken by that statement either way, and a
//!   write's lock is taken before it, as before any other; one that ran
//!   none sends nothing at all. When the beginning fails (the lock: a
//!   deadlock), that statement fails saying why, and the transaction
//!   cannot commit ([`PgConn::commit`] refuses);
//! - a transaction names its store with `SET LOCAL`, which the server
//!   only parses, not `SELECT set_config(..)`, which it also plans and
//!   runs (`pgbench`: 6–12 µs less, here);
//! - a read transaction's end is sent without waiting for its answer:
//!   nothing it did is kept, its answer is read before the next request's,
//!   and it leaves nothing to wait for (a failure there would be ignored
//!   anyway, as the next request on the connection would fail too).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use bytes::BytesMut;
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) mod ddl;
pub(crate) mod upgrades;

use crate::error::{Result, StoreError};
use crate::value::Value;

fn database(reason: impl Into<String>) -> StoreError {
    StoreError::Database {
        path: "postgresql".into(),
        reason: reason.into(),
    }
}

/// Maps a driver error to a store error, in the terms the SQLite backend
/// uses (a constraint names what it is about).
fn classify(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 23: integrity constraint violations.
        if code.starts_with("23") {
            return StoreError::Constraint(constraint(db));
        }
        return database(format!("{} ({code})", db.message()));
    }
    // The driver's own words name the step ("error serializing parameter
    // 0"); the reason is its source's.
    match std::error::Error::source(&e) {
        Some(why) => database(format!("{e}: {why}")),
        None => database(e.to_string()),
    }
}

/// What [`classify`] says of `e`, as text.
fn classify_ref(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The words of a refused constraint, as the SQLite backend says them:
/// about items and their attributes.
fn constraint(db: &tokio_postgres::error::DbError) -> String {
    let code = db.code();
    if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
        // Indexes are named `<table>__<attr>[__<attr>…]` (`sql::indexes`).
        if let Some((table, attrs)) = db.constraint().and_then(|c| c.split_once("__")) {
            let item = crate::sql::describe_column(table);
            let attrs: Vec<String> = attrs.split("__").map(|a| format!("{item}.{a}")).collect();
            return format!("another item already has this {}", attrs.join(" + "));
        }
    }
    if *code == tokio_postgres::error::SqlState::NOT_NULL_VIOLATION
        && let (Some(table), Some(column)) = (db.table(), db.column())
    {
        return format!(
            "{}.{column} must have a value",
            crate::sql::describe_column(table)
        );
    }
    db.message().to_string()
}

/// An error and each of its causes, `: `-separated: the driver says "error
/// performing TLS handshake", its cause says which certificate and why.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Refuses a call that would block an async worker.
fn refuse_in_async(call: &'static str) -> Result<()> {
    if !crate::blocking::may_block() {
        return Err(StoreError::BlockingInAsync {
            call,
            instead: "Store::write(..).await or Store::read(..).await, which run on the store's threads",
        });
    }
    Ok(())
}

/// How to reach the server at `url`: over TLS (rustls) when the URL asks
/// for it with `sslmode=require`, as a server on another machine should
/// be reached, else in the clear (a server on this machine, or on a
/// private network: libpq's default of trying TLS without checking whom
/// it talks to protects nothing, and is not done). The server's
/// certificate must be signed by one of the system's authorities, or by
/// one in the PEM file the URL's `sslrootcert` names, as libpq reads it.
fn connection_config(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    use tokio_postgres::config::SslMode;
    let (url, root_cert) = without_root_cert(url);
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| database(format!("{url:?} is not a PostgreSQL URL: {e}")))?;
    if config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
        // Never used: the system's roots are not read for it.
        let unused = trusting(rustls::RootCertStore::empty()).map_err(database)?;
        return Ok((config, MakeRustlsConnect::new(unused)));
    }
    Ok((
        config,
        MakeRustlsConnect::new(tls_config(root_cert.as_deref())?),
    ))
}

/// `url` without its `sslrootcert` parameter (which the driver does not
/// read), and that parameter's value.
fn without_root_cert(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root_cert = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("sslrootcert=") {
            Some(v) => {
                root_cert = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), root_cert)
    } else {
        (format!("{base}?{}", kept.join("&")), root_cert)
    }
}

/// The TLS settings of a site's connections: the roots it trusts.
fn tls_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig> {
    (|| {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        // A system without a certificate bundle trusts only the
        // authority it is given.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = root_cert {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert={path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            }
        }
        trusting(roots)
    })()
    .map_err(database)
}

/// TLS settings that trust `roots`.
fn trusting(roots: rustls::RootCertStore) -> std::result::Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    .map_err(|e| e.to_string())
}

/// A pool of connections to one PostgreSQL database.
#[derive(Clone)]
pub(crate) struct PgPool {
    inner: Arc<Pool>,
}

struct Pool {
    config: tokio_postgres::Config,
    /// TLS, when the URL asks for it ([`connection_config`]).
    tls: MakeRustlsConnect,
    size: usize,
    state: Mutex<PoolState>,
    /// Signalled when a connection is given back or a slot freed.
    freed: Condvar,
}

struct PoolState {
    // Boxed as a PgConn keeps it: going in and out moves a pointer.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Link>>,
    /// Connections open, idle or in use.
    open: usize,
}

/// One connection, and the runtime that drives its I/O: a one-thread
/// runtime of its own, which runs only while a thread waits on it
/// ([`PgConn::wait`]), on whichever thread uses the connection (one at a
/// time).
struct Link {
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    client: tokio_postgres::Client,
    /// Statements prepared on this connection, by their text.
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
}

impl Link {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("a runtime until dropped")
    }
}

impl Drop for Link {
    /// Ends the connection's runtime without waiting for anything: a pool
    /// may be dropped on an async worker, where a runtime may not be shut
    /// down the usual way, which waits. (The connection closes with it.)
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgPool {
    /// A pool for `url` (`postgres://user@host:port/database`), of at most
    /// `size` connections. Connects lazily: a wrong address is reported by
    /// the first [`PgPool::get`].
    pub(crate) fn new(url: &str, size: usize) -> Result<PgPool> {
        let (config, tls) = connection_config(url)?;
        Ok(PgPool {
            inner: Arc::new(Pool {
                config,
                tls,
                size: size.max(1),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                freed: Condvar::new(),
            }),
        })
    }

    /// A connection, waiting for one to be free (on a store thread).
    pub(crate) fn get(&self) -> Result<PgConn> {
        refuse_in_async("PgPool::get")?;
        let pool = &self.inner;
        let mut state = pool.state.lock().unwrap_or_else(|e| e.into_inner());
        let link = loop {
            if let Some(link) = state.idle.pop() {
                if link.client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                break link;
            }
            if state.open < pool.size {
                state.open += 1;
                drop(state);
                match self.connect() {
                    Ok(link) => break link,
                    Err(e) => {
                        pool.give_slot_back();
                        return Err(e);
                    }
                }
            }
            state = pool.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        };
        Ok(PgConn {
            link: Some(link),
            pool: self.inner.clone(),
            in_transaction: Cell::new(false),
            guarded: Cell::new(false),
            pending_begin: Cell::new(None),
            release_pending: Cell::new(false),
            read_only: Cell::new(false),
            aborted: Cell::new(None),
        })
    }

    /// A new connection, with its runtime.
    fn connect(&self) -> Result<Box<Link>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                database(format!(
                    "could not start a PostgreSQL connection's runtime: {e}"
                ))
            })?;
        let (client, connection) = rt
            .block_on(self.inner.config.connect(self.inner.tls.clone()))
            .map_err(|e| database(format!("no PostgreSQL connection: {}", with_causes(&e))))?;
        // Runs whenever a thread waits on `rt`: the connection's I/O.
        rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a PostgreSQL connection failed");
            }
        });
        Ok(Box::new(Link {
            rt: Some(rt),
            client,
            statements: RefCell::new(HashMap::new()),
        }))
    }
}

impl Pool {
    fn give_slot_back(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.open -= 1;
        drop(state);
        self.freed.notify_one();
    }
}

/// One pooled connection, given back to its pool when dropped.
pub(crate) struct PgConn {
    /// `None` only while dropping. (Boxed: a runtime is large, and a
    /// store's connections are moved about.)
    link: Option<Box<Link>>,
    pool: Arc<Pool>,
    /// Whether a transaction is open.
    in_transaction: Cell<bool>,
    /// Whether statements run under a savepoint each: in a write
    /// transaction, where a closure may catch a refused statement and go
    /// on. (A failed read is returned, and ends its transaction.)
    guarded: Cell<bool>,
    /// The statements that begin the open transaction, not sent yet: they
    /// go with its first statement (a read's; see the module's docs).
    pending_begin: Cell<Option<String>>,
    /// Whether the last statement's savepoint is still to be released
    /// (with whatever is sent next).
    release_pending: Cell<bool>,
    /// Whether the open transaction is a read, whose end is sent without
    /// waiting for the answer.
    read_only: Cell<bool>,
    /// Why the open transaction cannot go on, if it cannot: what began it,
    /// or a statement's savepoint, failed, so PostgreSQL has aborted it
    /// (and would answer a COMMIT by rolling back, without an error).
    aborted: Cell<Option<String>>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else { return };
        if link.client.is_closed() {
            return self.pool.give_slot_back();
        }
        let mut state = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        state.idle.push(link);
        drop(state);
        self.pool.freed.notify_one();
    }
}

/// The savepoint each statement in a write transaction runs under.
const SAVEPOINT: &str = "SAVEPOINT mantissa_statement";
const RELEASE: &str = "RELEASE SAVEPOINT mantissa_statement";

impl PgConn {
    fn link(&self) -> &Link {
        self.link.as_ref().expect("a connection until dropped")
    }

    fn client(&self) -> &tokio_postgres::Client {
        &self.link().client
    }

    /// Waits for `f` on this thread, which meanwhile drives the
    /// connection's I/O.
    fn wait<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        self.link().rt().block_on(f).map_err(classify)
    }

    /// What must be sent before anything else on the connection: a
    /// transaction's beginning and the last statement's savepoint's
    /// release, each if it is pending, `;`-separated (empty: nothing).
    fn take_prefix(&self) -> String {
        let mut prefix = self.pending_begin.take().unwrap_or_default();
        if self.release_pending.replace(false) {
            if !prefix.is_empty() {
                prefix.push_str("; ");
            }
            prefix.push_str(RELEASE);
        }
        prefix
    }

    /// Runs `statement` on this connection, after what is pending
    /// ([`PgConn::take_prefix`]), sent with it in one round trip; in a
    /// write transaction, under a savepoint sent with it, released with
    /// whatever is sent next or rolled back to when it failed (see the
    /// module documentation) — unless `savepoint` is false: a statement
    /// that nothing in the database can refuse ([`PgConn::insert_unguarded`]).
    /// Should one fail all the same, PostgreSQL has aborted the
    /// transaction, which then cannot commit.
    fn guarded<T>(
        &self,
        savepoint: bool,
        statement: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let mut prefix = self.take_prefix();
        let in_write = self.guarded.get();
        let guarded = in_write && savepoint;
        // A server's refusal aborts a write that has no savepoint to go
        // back to; a value the driver could not encode was never sent.
        let aborts = |e: &tokio_postgres::Error| {
            if in_write && !savepoint && e.as_db_error().is_some() {
                self.aborted.set(Some(classify_ref(e)));
            }
        };
        if guarded {
            if !prefix.is_empty() {
                prefix.push_str("; ");
            }
            prefix.push_str(SAVEPOINT);
        }
        if prefix.is_empty() {
            return self.link().rt().block_on(statement).map_err(|e| {
                aborts(&e);
                classify(e)
            });
        }
        let client = self.client();
        let outcome = self.link().rt().block_on(async {
            // Both are sent before either answer is read: one round trip.
            let (saved, done) = tokio::join!(client.batch_execute(&prefix), statement);
            if let Err(e) = saved {
                self.aborted.set(Some(classify_ref(&e)));
                return Err(e);
            }
            match done {
                Ok(v) => Ok(Ok(v)),
                Err(e) if guarded => {
                    let back = client
                        .batch_execute(&format!("ROLLBACK TO {SAVEPOINT}; {RELEASE}"))
                        .await;
                    if let Err(b) = back {
                        self.aborted.set(Some(classify_ref(&b)));
                        return Err(b);
                    }
                    Ok(Err(e))
                }
                Err(e) => {
                    aborts(&e);
                    Ok(Err(e))
                }
            }
        });
        let done = outcome.map_err(classify)?.map_err(classify)?;
        // Released with whatever is sent next (a commit releases it too).
        self.release_pending.set(guarded);
        Ok(done)
    }

    /// `sql` as PostgreSQL reads it ([`for_postgres`]), prepared once per
    /// connection.
    async fn prepared(
        &self,
        sql: &str,
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let link = self.link();
        if let Some(stmt) = link.statements.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = link.client.prepare(&for_postgres(sql)).await?;
        link.statements
            .borrow_mut()
            .insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Runs statements that take no parameters, `;`-separated: not under
    /// a savepoint of its own, since they may be savepoints themselves
    /// (`Write::savepoint`), which releasing an outer one would release.
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        let prefix = self.take_prefix();
        if prefix.is_empty() {
            return self.wait(self.client().batch_execute(sql));
        }
        // A pending savepoint is the innermost one: released first, it is
        // released as it would have been right after its statement.
        let done = self.wait(self.client().batch_execute(&format!("{prefix}; {sql}")));
        if let Err(e) = &done
            && self.guarded.get()
        {
            self.aborted.set(Some(e.to_string()));
        }
        done
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize> {
        let params = as_params(params);
        let n = self.guarded(true, async {
            let stmt = self.prepared(sql).await?;
            self.client().execute(&stmt, &params).await
        })?;
        Ok(n as usize)
    }

    /// Runs an `INSERT` into a table with an `id` column and returns the
    /// new row's id.
    pub(crate) fn insert(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        self.insert_with(true, sql, params)
    }

    /// [`PgConn::insert`] of a row that nothing in the database can
    /// refuse (the caller knows: no unique index, no reference to check,
    /// no trigger, every value fits its column), without a savepoint of
    /// its own: in a write, a savepoint and its release are statements
    /// the server runs, as costly as a small insert. A refusal all the
    /// same (a full disk) aborts the transaction, which cannot commit.
    pub(crate) fn insert_unguarded(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        self.insert_with(false, sql, params)
    }

    fn insert_with(&self, savepoint: bool, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        let returning = format!("{sql} RETURNING id");
        // Its first time on this connection, the statement is prepared
        // first, which the server refuses if the table is not what the
        // statement says (a column gone): that is explained to the caller
        // (`schema::explain`), which asks the database, so the transaction
        // must go on.
        let savepoint = savepoint || !self.link().statements.borrow().contains_key(&returning);
        let row = self
            .rows_with(savepoint, &returning, params)?
            .into_iter()
            .next()
            .ok_or_else(|| database(format!("no row from {returning}")))?;
        match row.into_iter().next() {
            Some(Value::Integer(id)) => Ok(id),
            other => Err(database(format!("an insert returned {other:?}, not an id"))),
        }
    }

    /// Every row of a query, each as its values in column order.
    pub(crate) fn rows(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Vec<Value<'static>>>> {
        self.rows_with(true, sql, params)
    }

    fn rows_with(
        &self,
        savepoint: bool,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Vec<Vec<Value<'static>>>> {
        let params = as_params(params);
        let rows = self.guarded(savepoint, async {
            let stmt = self.prepared(sql).await?;
            self.client().query(&stmt, &params).await
        })?;
        rows.iter().map(values).collect()
    }

    /// The first column of the first row, if there is a row.
    pub(crate) fn scalar(&self, sql: &str, params: &[Value<'_>]) -> Result<Option<Value<'static>>> {
        Ok(self
            .rows(sql, params)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next()))
    }

    /// Begins a transaction with `sql` (which may go on with statements
    /// of its own, `;`-separated, sent in the same round trip).
    fn begin(&self, sql: &str, guarded: bool) -> Result<()> {
        self.wait(self.client().batch_execute(sql))?;
        self.aborted.set(None);
        self.in_transaction.set(true);
        self.guarded.set(guarded);
        self.read_only.set(false);
        Ok(())
    }

    /// Begins a transaction with `sql` (as [`PgConn::begin`]), sent with
    /// its first statement (see the module's docs). If the beginning
    /// fails, that statement says so, and the transaction cannot commit.
    fn begin_lazily(&self, sql: String, guarded: bool) {
        self.pending_begin.set(Some(sql));
        self.release_pending.set(false);
        self.aborted.set(None);
        self.in_transaction.set(true);
        self.guarded.set(guarded);
        self.read_only.set(!guarded);
    }

    /// Begins a write transaction that sees every commit before each of
    /// its statements (read committed).
    #[cfg(test)]
    pub(crate) fn begin_write(&self) -> Result<()> {
        self.begin("BEGIN", true)
    }

    /// Begins a read transaction: one snapshot for all its statements, as
    /// a read on SQLite sees.
    #[cfg(test)]
    pub(crate) fn begin_read(&self) -> Result<()> {
        self.begin_lazily(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into(),
            false,
        );
        Ok(())
    }

    /// Ends the transaction's bookkeeping; whether it had begun on the
    /// server (a read that ran no statement has not).
    fn end(&self) -> bool {
        self.aborted.set(None);
        self.in_transaction.set(false);
        self.guarded.set(false);
        self.release_pending.set(false);
        self.pending_begin.take().is_none()
    }

    /// Commits the open transaction; refused, and rolled back, when it was
    /// aborted ([`PgConn::aborted`]).
    pub(crate) fn commit(&self) -> Result<()> {
        self.commit_after(None)
    }

    /// [`PgConn::commit`], sending the statement `before` (which takes no
    /// parameters) with the `COMMIT`, in the same round trip.
    fn commit_after(&self, before: Option<&str>) -> Result<()> {
        if let Some(why) = self.aborted.take() {
            self.read_only.set(false);
            self.rollback();
            return Err(database(format!(
                "the transaction was rolled back, since PostgreSQL could not go on with it: {why}"
            )));
        }
        if !self.end() {
            return Ok(());
        }
        // COMMIT releases a pending savepoint with the rest.
        let Some(before) = before else {
            return self.wait(self.client().batch_execute("COMMIT"));
        };
        let sent = self.wait(self.client().batch_execute(&format!("{before}; COMMIT")));
        if sent.is_err() {
            // `before` failed: the transaction is aborted, and the COMMIT
            // after it was not run.
            let _ = self.wait(self.client().batch_execute("ROLLBACK"));
        }
        sent
    }

    /// Rolls back whatever transaction is open (none: nothing happens).
    pub(crate) fn rollback(&self) {
        if !self.in_transaction.get() {
            return;
        }
        let read_only = self.read_only.replace(false);
        if !self.end() {
            return;
        }
        if read_only {
            self.send_only("ROLLBACK");
        } else {
            let _ = self.wait(self.client().batch_execute("ROLLBACK"));
        }
    }

    /// Sends `sql` without waiting for its answer, which the connection
    /// reads and drops before the answer to the next request (whose
    /// request goes after it). For a read transaction's end: nothing it
    /// did is kept, and the server ends it as soon as it reads it.
    fn send_only(&self, sql: &str) {
        use std::future::Future;
        // The driver queues a request when its future is first polled.
        let mut sent = std::pin::pin!(self.client().batch_execute(sql));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = sent.as_mut().poll(&mut cx);
        // And the connection writes it now, not with the next request: a
        // read left open on an idle connection would hold its snapshot.
        // (Yielding once lets the runtime run the connection's task, which
        // the request woke, before it returns.)
        self.link().rt().block_on(tokio::task::yield_now());
    }

    pub(crate) fn in_transaction(&self) -> bool {
        self.in_transaction.get()
    }
}

/// How long a change to the shared tables waits for a table that other
/// stores' writes hold (a trigger on a type's table, made when a type
/// that refers to it gets its own): then it fails, naming the wait,
/// rather than wait on a write that may be waiting for it.
const SCHEMA_WAIT: &str = "10s";

/// A connection of one store: a pooled connection, and the store that
/// each of its transactions names (see [`ddl`]).
pub(crate) struct StoreConn {
    conn: PgConn,
    pool: PgPool,
    store: i64,
    /// What error messages call the store.
    label: PathBuf,
}

impl std::fmt::Debug for StoreConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoreConn({}, store {})",
            self.label.display(),
            self.store
        )
    }
}

impl StoreConn {
    /// A connection from `pool` for store `store`.
    pub(crate) fn new(pool: &PgPool, store: i64, label: PathBuf) -> Result<StoreConn> {
        Ok(StoreConn {
            conn: pool.get()?,
            pool: pool.clone(),
            store,
            label,
        })
    }

    /// Runs `f` on another connection of the store, in a transaction of
    /// its own that holds the site's schema lock and commits when `f`
    /// returns: for changes to the tables every store shares (an item
    /// type's first table), which must not wait inside one store's write
    /// for another store's (two stores' first items of one type would
    /// each wait for the other's table, unseen by the store's own
    /// deadlock check), and which no store's rollback should undo.
    pub(crate) fn schema_change(&self, f: impl FnOnce(&super::Conn) -> Result<()>) -> Result<()> {
        let other = StoreConn::new(&self.pool, self.store, self.label.clone())?;
        let store = self.store;
        other.conn.begin(
            &format!(
                "BEGIN; SET LOCAL lock_timeout = '{SCHEMA_WAIT}'; SELECT set_config('mantissa.store', '{store}', true), pg_advisory_xact_lock({})",
                ddl::SCHEMA_LOCK
            ),
            false,
        )?;
        let other = super::Conn::Postgres(other);
        match f(&other) {
            Ok(()) => other.commit(),
            Err(e) => {
                other.rollback();
                Err(e)
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.label
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        self.scoped(|c| c.batch(sql))
    }

    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize> {
        self.scoped(|c| c.execute(sql, params))
    }

    pub(crate) fn insert(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        self.scoped(|c| c.insert(sql, params))
    }

    pub(crate) fn insert_unguarded(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        self.scoped(|c| c.insert_unguarded(sql, params))
    }

    pub(crate) fn rows(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Vec<Value<'static>>>> {
        self.scoped(|c| c.rows(sql, params))
    }

    pub(crate) fn scalar(&self, sql: &str, params: &[Value<'_>]) -> Result<Option<Value<'static>>> {
        self.scoped(|c| c.scalar(sql, params))
    }

    /// Runs `f` in the open transaction, or else in one of its own that
    /// names the store: a statement outside any transaction (the writer's
    /// own bookkeeping, between the transactions it runs) sees the store's
    /// rows, as it does on the store's file. The store's setting is never
    /// left on the connection, which goes back to the site's pool.
    fn scoped<T>(&self, f: impl FnOnce(&PgConn) -> Result<T>) -> Result<T> {
        if self.conn.in_transaction() {
            return f(&self.conn);
        }
        let store = self.store;
        self.conn.begin(
            &format!("BEGIN; SET LOCAL mantissa.store = '{store}'"),
            false,
        )?;
        match f(&self.conn) {
            Ok(v) => self.conn.commit().map(|()| v),
            Err(e) => {
                self.conn.rollback();
                Err(e)
            }
        }
    }

    /// Runs a query, handing each row to `f`.
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&mut super::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        for row in self.rows(sql, params)? {
            f(&mut super::Row::Values(row.into_iter()))?;
        }
        Ok(())
    }

    /// Begins the store's write transaction: names the store, and waits
    /// for the store's lock, which every node's writers of this store
    /// take, so that its writes run one at a time across the site as they
    /// do on one SQLite file (a transaction-level advisory lock on the
    /// store's id, released by its commit or rollback). Read committed
    /// under that lock sees every write before it: no write of the store
    /// can fail for another's, as serializable ones would, and a closure
    /// that has run cannot be run again.
    ///
    /// It is sent with the transaction's first statement
    /// ([`PgConn::begin_lazily`]): one round trip less for every write.
    pub(crate) fn begin_write(&self) -> Result<()> {
        let store = self.store;
        self.conn.begin_lazily(
            format!(
                "BEGIN; SET LOCAL mantissa.store = '{store}'; SELECT pg_advisory_xact_lock({store}); SELECT mantissa_store_alive({store})"
            ),
            true,
        );
        Ok(())
    }

    /// Begins a read transaction of the store: one snapshot (sent with
    /// its first statement: [`PgConn::begin_lazily`]).
    pub(crate) fn begin_read(&self) -> Result<()> {
        let store = self.store;
        self.conn.begin_lazily(
            format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL mantissa.store = '{store}'"
            ),
            false,
        );
        Ok(())
    }

    pub(crate) fn commit(&self) -> Result<()> {
        self.conn.commit()
    }

    /// Commits, with a notification carrying `payload` on the site's
    /// change channel, sent in the same round trip: PostgreSQL delivers it
    /// when, and only if, the transaction commits.
    pub(crate) fn commit_announcing(&self, payload: &str) -> Result<()> {
        self.conn.commit_after(Some(&format!(
            "SELECT pg_notify('{}', {})",
            crate::changes::CHANNEL,
            ddl::literal(payload)
        )))
    }

    pub(crate) fn rollback(&self) {
        self.conn.rollback()
    }

    pub(crate) fn in_transaction(&self) -> bool {
        self.conn.in_transaction()
    }
}

/// Runs `f`, which waits on PostgreSQL, on this thread, or on a thread of
/// its own when this one is an async worker (which must not wait): for
/// what opens a store, which the site does wherever it is asked, as
/// opening a file touches the disk wherever it is asked. What runs in a
/// store's transactions never comes here: it is on the store's threads.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    if crate::blocking::may_block() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err(database("opening a store on PostgreSQL panicked")))
    })
}

/// Makes the site's tables, and those of every item type of the program
/// that the site has none of yet (with their indexes and triggers), and
/// upgrades those the site holds at an older version, in one transaction
/// under the schema lock: so that two nodes starting at once do it once,
/// and no store's write ever changes the schema (which would wait for
/// other stores' writes to tables it touches). A version newer than the
/// program's refuses the site, changing nothing.
pub(crate) fn make_site_tables(pool: &PgPool, registry: &crate::item::Registry) -> Result<()> {
    use super::Dialect;
    let site = StoreConn {
        conn: pool.get()?,
        pool: pool.clone(),
        store: 0,
        label: PathBuf::from("postgresql"),
    };
    // Statements run in this one transaction (no savepoints: any failure
    // undoes all of it).
    site.conn.begin(
        &format!("BEGIN; SELECT pg_advisory_xact_lock({})", ddl::SCHEMA_LOCK),
        false,
    )?;
    let conn = super::Conn::Postgres(site);
    let made = (|| -> Result<()> {
        // Made already (by this program's version of them), they are left
        // alone: remaking their policies would lock every table, and wait
        // for every other node's transactions, at each start.
        if !ddl::site_tables_current(&conn)? {
            conn.batch(&ddl::site_tables())?;
        }
        let mut known = std::collections::HashMap::new();
        for row in conn.rows("SELECT name, version FROM _types", &[])? {
            let mut it = row.into_iter();
            if let (Some(name), Some(v)) = (
                crate::schema::text(it.next()),
                crate::schema::int(it.next()),
            ) {
                known.insert(name, v as u32);
            }
        }
        let mut new = Vec::new();
        for (i, t) in registry.types().iter().enumerate() {
            match known.get(t.name) {
                None => new.push((i, t)),
                Some(&v) if v == t.version => {}
                Some(&v) if v > t.version => {
                    return Err(StoreError::NewerVersion {
                        path: conn.path().to_path_buf(),
                        item: t.name.to_string(),
                        stored: v,
                        known: t.version,
                    });
                }
                Some(&v) => {
                    if !upgrades::start(&conn, registry, i, t, v)? {
                        upgrade_shared_table(&conn, registry, i, t, v)?;
                        // Items an earlier start left to move, at an
                        // older version still: all of them now.
                        upgrades::finish_now(&conn, registry, t)?;
                    }
                }
            }
        }
        for &(i, t) in &new {
            conn.batch(&ddl::Postgres::create_table(t, &t.table()))?;
            conn.batch(&ddl::Postgres::create_indexes(t))?;
            conn.execute(
                ddl::RECORD_TYPE,
                &[
                    Value::Text(t.name.into()),
                    Value::Integer(t.version.into()),
                    Value::Text(registry.create_sql(i).to_string().into()),
                ],
            )?;
        }
        // Every new table is there: the triggers between them can name them.
        for (_, t) in &new {
            for trigger in ddl::Postgres::ref_triggers(t) {
                conn.batch(&trigger.sql)?;
            }
        }
        Ok(())
    })();
    match made {
        Ok(()) => conn.commit(),
        Err(e) => {
            conn.rollback();
            Err(e)
        }
    }
}

/// Upgrades the table every store's items of `t` share from version
/// `from`: each store's rows, read under its own id, go through the chain
/// of upgraders into a new table, which then takes the old one's place,
/// with its id sequence moved on past every id and the triggers that
/// name it made again. Inside the caller's transaction, so that the site
/// is upgraded whole or not at all. For small tables, and those that
/// `upgrades.rs` does not move store by store in the background.
fn upgrade_shared_table(
    conn: &super::Conn,
    registry: &crate::item::Registry,
    i: usize,
    t: &crate::item::ItemType,
    from: u32,
) -> Result<()> {
    use super::Dialect;
    use crate::sql::ident;
    let label = conn.path().to_path_buf();
    check_upgraders(conn, registry, t, from)?;
    tracing::info!(
        item = t.name,
        from,
        to = t.version,
        "upgrading an item type in every store"
    );
    let (old, new) = (t.table(), format!("{}__upgrading", t.table()));
    conn.batch(&format!("DROP TABLE IF EXISTS {} CASCADE", ident(&new)))?;
    conn.batch(&ddl::Postgres::create_table(t, &new))?;
    let (columns, select) = crate::upgrade::stored_columns(conn, &old)?;
    let insert = crate::sql::insert(t, &new, true);
    let stores = conn.rows("SELECT id FROM _stores ORDER BY id", &[])?;
    for store in stores {
        let Some(Value::Integer(store)) = store.into_iter().next() else {
            continue;
        };
        conn.execute(
            "SELECT set_config('mantissa.store', ?, true)",
            &[Value::Text(store.to_string().into())],
        )?;
        for row in conn.rows(
            &format!("SELECT {select} FROM {} ORDER BY id", ident(&old)),
            &[],
        )? {
            let upgraded = crate::upgrade::upgraded_row(registry, &label, t, from, &columns, row)?;
            conn.execute(&insert, &upgraded)?;
        }
    }
    conn.execute("SELECT set_config('mantissa.store', '', true)", &[])?;
    let old_sequence = id_sequence(conn, &old)?;
    ids_go_on_from(conn, &new, &old_sequence)?;
    // The old table goes with the triggers on it: its own and those of
    // the types that refer to it, made again on the new one.
    conn.batch(&format!(
        "DROP TABLE {o}; ALTER TABLE {n} RENAME TO {o}",
        o = ident(&old),
        n = ident(&new)
    ))?;
    conn.batch(&ddl::Postgres::create_indexes(t))?;
    upgraded_table_in_place(conn, registry, i, t)
}

/// For the new table of `t` (the `i`th registered type), now under its
/// name: makes again the triggers on it (its own references' check, and
/// the on-delete rules of the types that refer to it; those on other
/// tables name it, and find it), and records the type at its version.
fn upgraded_table_in_place(
    conn: &super::Conn,
    registry: &crate::item::Registry,
    i: usize,
    t: &crate::item::ItemType,
) -> Result<()> {
    use super::Dialect;
    let table = t.table();
    for other in registry.types() {
        for trigger in ddl::Postgres::ref_triggers(other) {
            if trigger.on_table == table {
                conn.batch(&trigger.sql)?;
            }
        }
    }
    conn.execute(
        "UPDATE _types SET version = ?, shape = ? WHERE name = ?",
        &[
            Value::Integer(t.version.into()),
            Value::Text(registry.create_sql(i).to_string().into()),
            Value::Text(t.name.into()),
        ],
    )?;
    Ok(())
}

/// Refuses an upgrade of `t` from `from` that misses an upgrader.
fn check_upgraders(
    conn: &super::Conn,
    registry: &crate::item::Registry,
    t: &crate::item::ItemType,
    from: u32,
) -> Result<()> {
    for v in from..t.version {
        if registry.upgrader(t.name, v).is_none() {
            return Err(StoreError::MissingUpgrader {
                path: conn.path().to_path_buf(),
                item: t.name.to_string(),
                stored: from,
                missing: v,
            });
        }
    }
    Ok(())
}

/// The name of `table`'s id sequence.
fn id_sequence(conn: &super::Conn, table: &str) -> Result<String> {
    conn.scalar(
        "SELECT pg_get_serial_sequence(?, 'id')",
        &[Value::Text(crate::sql::ident(table).into())],
    )?
    .and_then(|v| crate::schema::text(Some(v)))
    .ok_or_else(|| database(format!("{table} has no id sequence")))
}

/// Moves `table`'s id sequence on past every id `sequence` gave, so that
/// ids of a type's new table go on from its old one's.
fn ids_go_on_from(conn: &super::Conn, table: &str, sequence: &str) -> Result<()> {
    conn.execute(
        &format!(
            "SELECT setval(pg_get_serial_sequence(?, 'id'), GREATEST(1, (SELECT last_value FROM {sequence})))"
        ),
        &[Value::Text(crate::sql::ident(table).into())],
    )?;
    Ok(())
}

/// Listens on the site's change channel (`changes.rs`) on a connection of
/// its own, passing what it hears to `announcer`, until the site is gone
/// (nobody holds the announcer). Returns once it listens, so that no
/// change committed after the site has opened is missed; a broken
/// connection is made again after a second, and what was announced
/// meanwhile is missed (subscribers are told so in `changes.rs`).
pub(crate) fn listen_for_changes(
    url: &str,
    announcer: &crate::changes::Announcer,
    on_deleted: impl Fn(&str, i64) + Send + Sync + 'static,
) -> Result<()> {
    let on_deleted = std::sync::Arc::new(on_deleted);
    use tokio_postgres::AsyncMessage;
    let (config, tls) = connection_config(url)?;
    let site = std::sync::Arc::downgrade(announcer);
    let (ready, listening) = std::sync::mpsc::channel();
    // A thread of its own, which waits on the connection all along.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            database(format!(
                "could not start the change listener's runtime: {e}"
            ))
        })?;
    let listen = async move {
        let mut ready = Some(ready);
        loop {
            if let Ok((client, mut connection)) = config.connect(tls.clone()).await {
                let site = site.clone();
                let on_deleted = on_deleted.clone();
                let heard = tokio::spawn(async move {
                    // Whether the site is gone is looked at now and then:
                    // then the connection closes.
                    let mut now_and_then = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            // The connection is driven here: its
                            // notifications arrive among its messages.
                            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                                match message {
                                    Some(Ok(AsyncMessage::Notification(n))) => {
                                        let Some(announcer) = site.upgrade() else {
                                            return true;
                                        };
                                        if let Some(change) =
                                            crate::changes::Change::from_payload(n.payload())
                                        {
                                            let _ = announcer.send(change);
                                        } else if let Some((name, id)) =
                                            crate::changes::Change::deleted_from_payload(n.payload())
                                        {
                                            on_deleted(&name, id);
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => return site.strong_count() == 0,
                                }
                            }
                            _ = now_and_then.tick() => {
                                if site.strong_count() == 0 {
                                    return true;
                                }
                            }
                        }
                    }
                });
                let listen = client
                    .batch_execute(&format!("LISTEN {}", crate::changes::CHANNEL))
                    .await;
                match (listen, ready.take()) {
                    (Ok(()), Some(r)) => {
                        let _ = r.send(Ok(()));
                    }
                    (Err(e), Some(r)) => {
                        let _ = r.send(Err(e.to_string()));
                        return;
                    }
                    (_, r) => ready = r,
                }
                let gone = heard.await.unwrap_or(false);
                drop(client);
                if gone {
                    return;
                }
                tracing::warn!(
                    "the connection that hears other nodes' changes was lost; connecting again"
                );
            } else if let Some(r) = ready.take() {
                let _ = r.send(Err("cannot connect".to_string()));
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    };
    std::thread::Builder::new()
        .name("mantissa-pg-listen".into())
        .spawn(move || rt.block_on(listen))
        .map_err(|e| database(format!("could not start the change listener: {e}")))?;
    match listening.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(database(format!(
            "cannot listen for other nodes' changes: {e}"
        ))),
        Err(_) => Err(database("listening for other nodes' changes took too long")),
    }
}

/// The id of the store called `key` (`site`, `user/<name>`): made if
/// `create` and there is none. Ids are never reused.
pub(crate) fn store_id(pool: &PgPool, key: &str, create: bool) -> Result<Option<i64>> {
    let c = pool.get()?;
    let key = Value::Text(key.to_string().into());
    if create {
        c.execute(
            "INSERT INTO _stores (name) VALUES (?) ON CONFLICT DO NOTHING",
            std::slice::from_ref(&key),
        )?;
    }
    match c.scalar("SELECT id FROM _stores WHERE name = ?", &[key])? {
        Some(Value::Integer(id)) => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// The names of the stores whose keys start with `prefix`, without it,
/// sorted.
pub(crate) fn user_names(pool: &PgPool, prefix: &str) -> Result<Vec<String>> {
    let rows = pool.get()?.rows(
        "SELECT substr(name, ?) FROM _stores WHERE starts_with(name, ?) ORDER BY name",
        &[
            Value::Integer(prefix.len() as i64 + 1),
            Value::Text(prefix.to_string().into()),
        ],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| crate::schema::text(r.into_iter().next()))
        .collect())
}

/// The size of the site's database on the server (tables, indexes, and
/// attached files, which are kept in it).
pub(crate) fn database_bytes(pool: &PgPool) -> Result<u64> {
    match pool
        .get()?
        .scalar("SELECT pg_database_size(current_database())", &[])?
    {
        Some(Value::Integer(n)) => Ok(u64::try_from(n).unwrap_or(0)),
        _ => Ok(0),
    }
}

/// Every table that holds stores' rows (those with a `_store` column): the
/// store's own and its items'.
fn store_tables(
    rows: impl FnOnce(&str) -> Result<Vec<Vec<Value<'static>>>>,
) -> Result<Vec<String>> {
    Ok(rows(
        "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relkind = 'r' AND a.attname = '_store' AND c.relnamespace = to_regnamespace(current_schema())
         ORDER BY 1",
    )?
    .into_iter()
    .filter_map(|row| match row.into_iter().next() {
        Some(Value::Text(t)) => Some(t.into_owned()),
        _ => None,
    })
    .collect())
}

/// The size of the store's rows, in every table.
pub(crate) fn stored_bytes(conn: &crate::backend::Conn) -> Result<u64> {
    let tables = store_tables(|sql| conn.rows(sql, &[]))?;
    if tables.is_empty() {
        return Ok(0);
    }
    let sum = tables
        .iter()
        .map(|t| {
            format!(
                "(SELECT COALESCE(SUM(pg_column_size(t.*)), 0) FROM {} t WHERE t._store = {})",
                crate::sql::ident(t),
                ddl::CURRENT_STORE
            )
        })
        .collect::<Vec<_>>()
        .join(" + ");
    match conn.scalar(&format!("SELECT CAST({sum} AS BIGINT)"), &[])? {
        Some(Value::Integer(n)) => Ok(u64::try_from(n).unwrap_or(0)),
        _ => Ok(0),
    }
}

/// Removes the store called `key` and every row it has, in one
/// transaction. Its id is not used again: a store made under the same
/// name later is another store.
pub(crate) fn drop_store(pool: &PgPool, key: &str) -> Result<()> {
    let Some(id) = store_id(pool, key, false)? else {
        return Ok(());
    };
    let c = pool.get()?;
    let tables = store_tables(|sql| c.rows(sql, &[]))?;
    let mut sql = format!(
        "BEGIN; SELECT set_config('mantissa.store', '{id}', true), set_config('mantissa.dropping', 'on', true), pg_advisory_xact_lock({id});"
    );
    for t in tables {
        // Named, not left to row-level security: a table being upgraded
        // store by store is not held to it (`upgrades.rs`).
        sql.push_str(&format!(
            "DELETE FROM {} WHERE _store = {id};",
            crate::sql::ident(&t)
        ));
    }
    // Every node hears of it, and forgets what it had open of the store
    // (`changes.rs`); a write still made through such a handle is refused
    // by `mantissa_store_alive`, which every write runs under the store's
    // lock.
    let name = key.strip_prefix(crate::site::USER_PREFIX).unwrap_or(key);
    sql.push_str(&format!(
        "DELETE FROM _stores WHERE id = {id}; SELECT pg_notify('{}', {}); COMMIT;",
        crate::changes::CHANNEL,
        ddl::literal(&crate::changes::Change::deleted_payload(name, id))
    ));
    c.batch(&sql)
}

/// `sql`, written for both engines, as PostgreSQL reads it: `?`
/// parameters numbered ([`numbered`]), and the target of an upsert (`ON
/// CONFLICT (…)`) led by `_store`, as every key and unique index is here
/// ([`ddl`]).
pub(crate) fn for_postgres(sql: &str) -> String {
    numbered(sql).replace("ON CONFLICT (", "ON CONFLICT (_store, ")
}

/// `sql` with its `?` parameters numbered `$1`, `$2`…, leaving those in
/// quoted text ('…') and quoted names ("…") alone.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (Some(q), c) if c == q => {
                // A doubled quote closes and reopens: the same either way.
                quote = None;
                out.push(c);
            }
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

fn as_params<'a>(params: &'a [Value<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A row's values, read by each column's type.
fn values(row: &Row) -> Result<Vec<Value<'static>>> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let got = match *ty {
                Type::INT8 => row
                    .try_get::<_, Option<i64>>(i)
                    .map(|v| v.map(Value::Integer)),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)
                    .map(|v| v.map(|n| Value::Integer(n.into()))),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)
                    .map(|v| v.map(|n| Value::Integer(n.into()))),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)
                    .map(|v| v.map(|b| Value::Integer(b.into()))),
                Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::Real)),
                Type::FLOAT4 => row
                    .try_get::<_, Option<f32>>(i)
                    .map(|v| v.map(|f| Value::Real(f.into()))),
                Type::BYTEA => row
                    .try_get::<_, Option<Vec<u8>>>(i)
                    .map(|v| v.map(|b| Value::Blob(b.into()))),
                _ => row
                    .try_get::<_, Option<String>>(i)
                    .map(|v| v.map(|s| Value::Text(s.into()))),
            };
            got.map(|v| v.unwrap_or(Value::Null)).map_err(|e| {
                database(format!(
                    "column {} ({ty}) cannot be read: {e}",
                    row.columns()[i].name()
                ))
            })
        })
        .collect()
}

/// A [`Value`] bound to a statement's parameter, in the parameter's type:
/// an integer is a `bigint`, `integer`, `smallint` or `boolean` (0 or not),
/// a real a `double precision` or `real`, text any text type, bytes
/// `bytea`. Anything else is refused with the types named.
impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Text(t), _) if <&str as ToSql>::accepts(ty) => t.as_ref().to_sql(ty, out),
            // A column of SQLite's `ANY` (`_meta.value`) is text here.
            (Value::Integer(i), _) if <&str as ToSql>::accepts(ty) => i.to_string().to_sql(ty, out),
            (Value::Real(f), _) if <&str as ToSql>::accepts(ty) => f.to_string().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_ref().to_sql(ty, out),
            (v, ty) => Err(format!("{v:?} cannot be stored in a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Which types fit depends on the value, not only on its Rust type:
        // `to_sql` says, naming both.
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn the_root_certificate_is_taken_out_of_the_url() {
        use super::without_root_cert;
        assert_eq!(
            without_root_cert("postgres://u@h/d?sslmode=require&sslrootcert=/ca.pem"),
            (
                "postgres://u@h/d?sslmode=require".to_string(),
                Some("/ca.pem".to_string())
            )
        );
        assert_eq!(
            without_root_cert("postgres://u@h/d?sslrootcert=/ca.pem"),
            ("postgres://u@h/d".to_string(), Some("/ca.pem".to_string()))
        );
        assert_eq!(
            without_root_cert("postgres://u@h/d"),
            ("postgres://u@h/d".to_string(), None)
        );
    }

    #[test]
    fn parameters_are_numbered_outside_quotes() {
        assert_eq!(
            numbered(r#"SELECT "a?" FROM t WHERE x = ? AND y = '?' AND z IN (?, ?)"#),
            r#"SELECT "a?" FROM t WHERE x = $1 AND y = '?' AND z IN ($2, $3)"#
        );
        assert_eq!(numbered("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
    }
}

/// A new, empty database for one test ([`crate::testing::postgres_database`]).
#[cfg(test)]
pub(crate) fn test_database() -> String {
    crate::testing::postgres_database()
}

#[cfg(test)]
mod on_a_server {
    use super::*;

    fn conn() -> PgConn {
        PgPool::new(&test_database(), 2).unwrap().get().unwrap()
    }

    fn table(c: &PgConn) {
        c.batch(
            "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                n BIGINT, f DOUBLE PRECISION, s TEXT, b BYTEA, flag BOOLEAN, small INTEGER)",
        )
        .unwrap();
    }

    #[test]
    fn values_go_in_and_come_back_the_same() {
        let c = conn();
        table(&c);
        let text = "it's \"quoted\", ünïcødé, and a ? mark";
        let id = c
            .insert(
                "INSERT INTO t (n, f, s, b, flag, small) VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    Value::Integer(i64::MIN),
                    Value::Real(-0.125),
                    Value::Text(text.into()),
                    Value::Blob(vec![0, 255, 7].into()),
                    Value::Integer(1),
                    Value::Integer(42),
                ],
            )
            .unwrap();
        let second = c
            .insert(
                "INSERT INTO t (n, f, s, b, flag, small) VALUES (?, ?, ?, ?, ?, ?)",
                &[
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            )
            .unwrap();
        assert!(second > id, "ids only grow: {id} then {second}");
        let rows = c
            .rows(
                "SELECT n, f, s, b, flag, small FROM t WHERE id = ?",
                &[Value::Integer(id)],
            )
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Value::Integer(i64::MIN),
                Value::Real(-0.125),
                Value::Text(text.into()),
                Value::Blob(vec![0, 255, 7].into()),
                Value::Integer(1),
                Value::Integer(42),
            ]]
        );
        let nulls = c
            .rows(
                "SELECT n, f, s, b, flag, small FROM t WHERE id = ?",
                &[Value::Integer(second)],
            )
            .unwrap();
        assert_eq!(nulls, vec![vec![Value::Null; 6]]);
        assert_eq!(
            c.scalar(
                "SELECT COUNT(*) FROM t WHERE s = ?",
                &[Value::Text(text.into())]
            )
            .unwrap(),
            Some(Value::Integer(1))
        );
        assert_eq!(
            c.scalar("SELECT s FROM t WHERE id = ?", &[Value::Integer(-1)])
                .unwrap(),
            None
        );
        assert_eq!(
            c.execute("UPDATE t SET n = ? WHERE n IS NULL", &[Value::Integer(7)])
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_rolled_back_write_leaves_nothing_and_a_committed_one_stays() {
        let c = conn();
        table(&c);
        c.begin_write().unwrap();
        c.execute(
            "INSERT INTO t (s) VALUES (?)",
            &[Value::Text("gone".into())],
        )
        .unwrap();
        c.rollback();
        c.begin_write().unwrap();
        c.execute(
            "INSERT INTO t (s) VALUES (?)",
            &[Value::Text("kept".into())],
        )
        .unwrap();
        c.commit().unwrap();
        c.begin_read().unwrap();
        let all = c.rows("SELECT s FROM t", &[]).unwrap();
        c.commit().unwrap();
        assert_eq!(all, vec![vec![Value::Text("kept".into())]]);
    }

    #[test]
    fn a_read_ends_at_once_though_its_end_is_not_waited_for() {
        let url = test_database();
        let pool = PgPool::new(&url, 2).unwrap();
        let (c, watcher) = (pool.get().unwrap(), pool.get().unwrap());
        table(&c);
        let pid = c.scalar("SELECT pg_backend_pid()", &[]).unwrap().unwrap();
        c.begin_read().unwrap();
        assert_eq!(
            c.rows("SELECT s FROM t", &[]).unwrap(),
            Vec::<Vec<Value<'static>>>::new()
        );
        c.rollback();
        // The connection sits idle, holding no snapshot, before its next use.
        let state = || {
            watcher
                .scalar(
                    "SELECT state FROM pg_stat_activity WHERE pid = ?",
                    std::slice::from_ref(&pid),
                )
                .unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while state() != Some(Value::Text("idle".into())) {
            assert!(std::time::Instant::now() < deadline, "{:?}", state());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // And the connection goes on.
        assert_eq!(c.scalar("SELECT 1", &[]).unwrap(), Some(Value::Integer(1)));
    }

    #[test]
    fn an_insert_without_a_savepoint_that_fails_all_the_same_stops_the_commit() {
        let c = conn();
        table(&c);
        c.begin_write().unwrap();
        let kept = c
            .insert_unguarded("INSERT INTO t (s) VALUES (?)", &[Value::Text("a".into())])
            .unwrap();
        assert!(kept > 0);
        // Text PostgreSQL cannot hold, which the store sends with a
        // savepoint: sent without one, the server refuses it and aborts
        // the transaction, which then cannot commit.
        let refused = c
            .insert_unguarded(
                "INSERT INTO t (s) VALUES (?)",
                &[Value::Text("nul \0".into())],
            )
            .unwrap_err()
            .to_string();
        assert!(refused.contains("0x00"), "{refused}");
        let commit = c.commit().unwrap_err().to_string();
        assert!(commit.contains("rolled back"), "{commit}");
        assert_eq!(
            c.scalar("SELECT COUNT(*) FROM t", &[]).unwrap(),
            Some(Value::Integer(0))
        );
        // With its savepoint, a refused insert leaves the write going.
        c.begin_write().unwrap();
        c.insert_unguarded("INSERT INTO t (s) VALUES (?)", &[Value::Text("b".into())])
            .unwrap();
        assert!(
            c.insert(
                "INSERT INTO t (s) VALUES (?)",
                &[Value::Text("nul \0".into())]
            )
            .is_err()
        );
        c.commit().unwrap();
        assert_eq!(
            c.scalar("SELECT COUNT(*) FROM t", &[]).unwrap(),
            Some(Value::Integer(1))
        );
    }

    #[test]
    fn a_write_whose_beginning_failed_cannot_commit() {
        let c = conn();
        table(&c);
        c.begin_lazily("BEGIN; SELECT no_such_function()".into(), true);
        let first = c
            .execute(
                "INSERT INTO t (s) VALUES (?)",
                &[Value::Text("lost".into())],
            )
            .unwrap_err()
            .to_string();
        assert!(first.contains("no_such_function"), "{first}");
        // A closure that went on regardless is told at its commit.
        let _ = c.execute(
            "INSERT INTO t (s) VALUES (?)",
            &[Value::Text("lost".into())],
        );
        let commit = c.commit().unwrap_err().to_string();
        assert!(commit.contains("rolled back"), "{commit}");
        assert!(!c.in_transaction());
        assert_eq!(
            c.scalar("SELECT COUNT(*) FROM t", &[]).unwrap(),
            Some(Value::Integer(0))
        );
    }

    #[test]
    fn mistakes_are_refused_saying_what_was_wrong() {
        let c = conn();
        c.batch("CREATE TABLE u (name TEXT NOT NULL UNIQUE)")
            .unwrap();
        c.execute(
            "INSERT INTO u (name) VALUES (?)",
            &[Value::Text("ann".into())],
        )
        .unwrap();
        let dup = c
            .execute(
                "INSERT INTO u (name) VALUES (?)",
                &[Value::Text("ann".into())],
            )
            .unwrap_err();
        assert!(
            matches!(dup, StoreError::Constraint(ref m) if m.contains("unique")),
            "{dup}"
        );
        let null = c
            .execute("INSERT INTO u (name) VALUES (?)", &[Value::Null])
            .unwrap_err();
        assert!(matches!(null, StoreError::Constraint(_)), "{null}");
        // A value of the wrong kind names both kinds; nothing is written.
        let wrong = c
            .execute(
                "INSERT INTO u (name) VALUES (?)",
                &[Value::Blob(vec![1].into())],
            )
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("cannot be stored in a text parameter"),
            "{wrong}"
        );
        assert_eq!(
            c.scalar("SELECT COUNT(*) FROM u", &[]).unwrap(),
            Some(Value::Integer(1))
        );
        let bad = c
            .rows("SELECT nothing FROM nowhere", &[])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("nowhere"), "{bad}");
    }

    #[test]
    fn a_wrong_address_or_a_call_from_an_async_worker_is_refused_at_once() {
        let wrong = PgPool::new("postgres://nobody@127.0.0.1:1/none", 1)
            .unwrap()
            .get()
            .err()
            .unwrap()
            .to_string();
        assert!(wrong.contains("no PostgreSQL connection"), "{wrong}");
        assert!(PgPool::new("not a url", 1).is_err());
        let pool = PgPool::new(&test_database(), 1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let refused = rt.block_on(async { pool.get().err() });
        assert!(
            matches!(refused, Some(StoreError::BlockingInAsync { .. })),
            "{refused:?}"
        );
    }
}
