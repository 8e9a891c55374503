//! The SQLite backend: opening files with the settings the store promises,
//! running statements, and turning driver errors into [`StoreError`]s that
//! name the file.
//!
//! Durability: WAL with `synchronous = FULL`, so a transaction that returned
//! success survives `kill -9` and power loss (the crash tests check the
//! first). Contention: a busy timeout, plus a retry loop around
//! `BEGIN IMMEDIATE`, so that `SQLITE_BUSY` from another process (the
//! command line beside a running server) never reaches the caller.

pub(crate) mod ddl;
pub(crate) mod introspect;
pub(crate) mod maintenance;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, ToSql};

use crate::error::{Result, StoreError};
use crate::value::Value;

/// How long a writer waits for another process's write lock before the
/// error would reach the caller. Long on purpose: the alternative is failing
/// a write that would have succeeded.
const BUSY_WAIT: Duration = Duration::from_secs(60);

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn owned(v: ValueRef<'_>) -> Value<'static> {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        // `from_utf8` first: its check is several times faster than the
        // lossy one's, and stored text is valid UTF-8 but for damage.
        ValueRef::Text(t) => Value::Text(match std::str::from_utf8(t) {
            Ok(s) => s.to_owned().into(),
            Err(_) => String::from_utf8_lossy(t).into_owned().into(),
        }),
        ValueRef::Blob(b) => Value::Blob(b.to_vec().into()),
    }
}

/// One row of a query's result: its values in column order, as owned
/// [`Value`]s, one at a time.
pub(crate) struct Row<'r> {
    row: &'r rusqlite::Row<'r>,
    next: usize,
    columns: usize,
}

impl Iterator for Row<'_> {
    type Item = Value<'static>;

    fn next(&mut self) -> Option<Value<'static>> {
        if self.next >= self.columns {
            return None;
        }
        let value = self.row.get_ref(self.next).ok().map(owned);
        self.next += 1;
        value
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.columns.saturating_sub(self.next);
        (left, Some(left))
    }
}

/// One connection to one store file.
pub(crate) struct Conn {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.path.display())
    }
}

impl Conn {
    /// Opens (creating if asked) a store file with the store's settings,
    /// after checking that it is a SQLite database and not another
    /// program's.
    pub(crate) fn open(path: &Path, create: bool) -> Result<Conn> {
        Conn::open_store(path, create, &["SELECT 1 FROM _meta"]).map(|(conn, _)| conn)
    }

    /// [`Conn::open`], returning also the rows of the first of `first` (the
    /// queries an opening store reads with, newest format first) that the
    /// file's tables answer: one query, so one read transaction and one
    /// round of file locks. `None` for a new file, with no tables at all.
    pub(crate) fn open_store(
        path: &Path,
        create: bool,
        first: &[&str],
    ) -> Result<(Conn, Option<Vec<Vec<Value<'static>>>>)> {
        let c = Conn::connect(path, create)?;
        // Look before changing anything: a file that is not a database fails
        // this read, and another program's database is refused before the
        // switch to WAL would rewrite its header.
        let mut found = None;
        for sql in first {
            match c.conn.prepare(sql) {
                Ok(mut stmt) => {
                    let mut rows = Vec::new();
                    c.run_rows(&mut stmt, &[], |row| {
                        rows.push(row.collect());
                        Ok(())
                    })?;
                    found = Some(rows);
                    break;
                }
                Err(e) if schema_missing(&e) => continue,
                Err(e) => return Err(c.err(e)),
            }
        }
        if found.is_none() {
            let tables: i64 = c
                .conn
                .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| c.err(e))?;
            if tables > 0 {
                return Err(StoreError::NotAStore {
                    path: c.path.clone(),
                    reason: "it is a SQLite database of some other program".into(),
                });
            }
        }
        let mode: String = c
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| c.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database {
                path: c.path.clone(),
                reason: format!("cannot use write-ahead logging (journal mode is {mode})"),
            });
        }
        Ok((c, found))
    }

    /// Another connection to a store already opened with [`Conn::open`]
    /// (its checks done, its file in WAL mode for good).
    pub(crate) fn reopen(path: &Path) -> Result<Conn> {
        Conn::connect(path, false)
    }

    /// A connection with the settings every connection of a store has.
    fn connect(path: &Path, create: bool) -> Result<Conn> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|e| {
            if !path.exists() {
                StoreError::Io {
                    path: path.to_path_buf(),
                    reason: "no such store".into(),
                }
            } else {
                classify(path, e)
            }
        })?;
        let c = Conn {
            conn,
            path: path.to_path_buf(),
        };
        // SQLite's legacy fallback reads a double-quoted name that is no
        // column as a string literal: a field added to a struct without a
        // new version would read as its own name, silently. Identifiers
        // are double-quoted everywhere here, strings never are.
        for dqs in [
            DbConfig::SQLITE_DBCONFIG_DQS_DML,
            DbConfig::SQLITE_DBCONFIG_DQS_DDL,
        ] {
            c.conn.set_db_config(dqs, false).map_err(|e| c.err(e))?;
        }
        c.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| c.err(e))?;
        c.conn.set_prepared_statement_cache_capacity(64);
        // References are enforced by the store's own triggers (see crate::sql),
        // which name the item and attribute when they refuse, and which
        // schema upgrades can rebuild inside a transaction.
        c.batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; PRAGMA recursive_triggers = ON;",
        )?;
        Ok(c)
    }

    /// Forgets the statements prepared so far (those an opening ran once),
    /// which would otherwise hold memory for as long as the connection.
    pub(crate) fn forget_statements(&self) {
        self.conn.flush_prepared_statement_cache();
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Maps a driver error to a store error naming this file.
    pub(crate) fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path, e)
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(|e| self.err(e))
    }

    /// Runs a statement; returns how many rows it changed. An UPDATE or
    /// DELETE of one of the store's own tables that was never made changes
    /// nothing (`schema::Internal`).
    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize> {
        let mut stmt = match self.conn.prepare_cached(sql) {
            Ok(stmt) => stmt,
            Err(e) if internal_table_missing(&e) && changes_existing_rows(sql) => return Ok(0),
            Err(e) => return Err(self.err(e)),
        };
        stmt.execute(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| self.err(e))
    }

    /// Runs an INSERT and returns the new row's id.
    pub(crate) fn insert(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        self.execute(sql, params)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Runs a query, handing each row to `f` as a [`Row`]: its values, in
    /// column order, taken one at a time (no row is collected first).
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&mut super::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = match self.conn.prepare_cached(sql) {
            Ok(stmt) => stmt,
            // One of the store's own tables not made yet: it holds nothing.
            Err(e) if internal_table_missing(&e) => return Ok(()),
            Err(e) => return Err(self.err(e)),
        };
        self.run_rows(&mut stmt, params, f)
    }

    fn run_rows(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        params: &[Value<'_>],
        mut f: impl FnMut(&mut super::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            f(&mut super::Row::Sqlite(Row {
                row,
                next: 0,
                columns,
            }))?;
        }
        Ok(())
    }

    /// Runs a query and collects its rows.
    pub(crate) fn rows(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Vec<Value<'static>>>> {
        let mut out = Vec::new();
        self.query(sql, params, |r| {
            out.push(r.collect());
            Ok(())
        })?;
        Ok(out)
    }

    /// The first column of the first row, if any.
    pub(crate) fn scalar(&self, sql: &str, params: &[Value<'_>]) -> Result<Option<Value<'static>>> {
        let mut out = None;
        self.query(sql, params, |r| {
            if out.is_none() {
                out = r.next();
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Starts a write transaction, waiting out other writers.
    pub(crate) fn begin_write(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.run_cached("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(()),
                Err(e) if is_busy(&e) && start.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Starts a read transaction: a consistent snapshot until it ends.
    pub(crate) fn begin_read(&self) -> Result<()> {
        self.run_cached("BEGIN DEFERRED").map_err(|e| self.err(e))
    }

    /// Transaction control runs on every read and write: prepared once.
    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    pub(crate) fn commit(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.run_cached("COMMIT") {
                Ok(()) => return Ok(()),
                Err(e) if is_busy(&e) && start.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// Folds the write-ahead log back into the database file and empties
    /// it. Readers in the middle of a transaction hold it up for up to the
    /// busy timeout; then it folds back what it can, and says so in the log.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let (busy, log, done): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?;
        if busy != 0 {
            tracing::warn!(store = %self.path.display(), pages = log, folded = done, "readers held up folding the log back into the file");
        }
        Ok(())
    }

    pub(crate) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Ends the transaction, if one is open, discarding its changes.
    pub(crate) fn rollback(&self) {
        if !self.conn.is_autocommit() {
            let _ = self.run_cached("ROLLBACK");
        }
    }
}

/// Whether `e` says a table does not exist: what a read whose snapshot
/// predates an item type's first table gets (`schema::has_table`).
pub(crate) fn is_missing_table(e: &StoreError) -> bool {
    matches!(e, StoreError::Database { reason, .. } if reason.starts_with("no such table"))
}

/// Whether `e` says a column is not in its table: what a statement of an
/// item type whose table was changed behind the store's back gets.
pub(crate) fn is_missing_column(e: &StoreError) -> bool {
    matches!(e, StoreError::Database { reason, .. }
        if reason.starts_with("no such column") || reason.contains("has no column named"))
}

/// SQLite's message in `e`, when it has one (a failure, or a statement
/// it could not prepare, with where).
fn sqlite_message(e: &rusqlite::Error) -> Option<&str> {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => Some(msg),
        rusqlite::Error::SqlInputError { msg, .. } => Some(msg),
        _ => None,
    }
}

/// Whether `e` says that one of the store's own tables (`_name`) does not
/// exist: made only when first written (`schema::Internal`).
fn internal_table_missing(e: &rusqlite::Error) -> bool {
    sqlite_message(e).is_some_and(|msg| msg.starts_with("no such table: _"))
}

/// Whether `e` says that a table or a column is not there (what an older
/// format of store, a new file or another program's database answers).
fn schema_missing(e: &rusqlite::Error) -> bool {
    sqlite_message(e)
        .is_some_and(|msg| msg.starts_with("no such table") || msg.starts_with("no such column"))
}

/// Whether a statement only changes rows that exist (so that with no
/// table it changes nothing, as with an empty one).
fn changes_existing_rows(sql: &str) -> bool {
    let head = sql.trim_start().as_bytes();
    [b"UPDATE".as_slice(), b"DELETE"]
        .iter()
        .any(|k| head.len() >= k.len() && head[..k.len()].eq_ignore_ascii_case(k))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotAStore {
            path,
            reason: "the file is not a SQLite database".into(),
        },
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            reason: e.to_string(),
        },
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Constraint(constraint(&e)),
        _ => StoreError::Database {
            path,
            reason: e.to_string(),
        },
    }
}

/// Turns SQLite's constraint messages into ones that speak of items.
fn constraint(e: &rusqlite::Error) -> String {
    let msg = e.to_string();
    if let Some(cols) = msg.strip_prefix("UNIQUE constraint failed: ") {
        let attrs: Vec<String> = cols.split(", ").map(crate::sql::describe_column).collect();
        return format!("another item already has this {}", attrs.join(" + "));
    }
    if let Some(col) = msg.strip_prefix("NOT NULL constraint failed: ") {
        return format!("{} must have a value", crate::sql::describe_column(col));
    }
    msg
}
