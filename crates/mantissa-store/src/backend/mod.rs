//! The boundary between the store and the database engine.
//!
//! Everything above this module speaks in [`Value`](crate::Value)s and
//! portable SQL written by [`crate::sql`] (quoted identifiers, `?`
//! parameters, `SELECT`/`INSERT`/`UPDATE`/`DELETE` that SQLite and
//! PostgreSQL read alike); only the backend touches a driver, and only the
//! backend writes what one engine alone understands: DDL and column types
//! ([`sqlite::ddl`]), what the engine says about its own schema and health
//! ([`sqlite::introspect`]), and work on whole stores: copies, exports,
//! table rebuilds ([`sqlite::maintenance`]). A test
//! (`engine_specific_sql_stays_in_the_backend`) fails when SQL only one
//! engine reads appears anywhere else in the store.
//!
//! A site's stores run on SQLite (rusqlite; [`crate::Site::open`]) or
//! on PostgreSQL ([`crate::Site::open_postgres`]); the engine is chosen
//! when the site opens ([`Location`], [`Engine`]), and each connection is
//! one of the two ([`Conn`]). What the PostgreSQL backend is:
//!
//! - **A user store** is a file on SQLite (`users/<name>.sqlite`: copying
//!   it copies the user). On PostgreSQL it is the rows of shared tables
//!   that carry its store id ([`postgres::ddl`]): every item table and
//!   every one of the store's own (`_files`, `_schedule`, `_outbox`…) has
//!   a `_store` column, first in its primary key and in every index, which
//!   is the distribution column a Citus cluster shards on. A transaction
//!   names its store once (`SET LOCAL`), and row-level security keeps it
//!   to that store's rows, filling `_store` in what it inserts: so the
//!   portable SQL above never names the store, and a mistake in it cannot
//!   reach another user's rows. (The rows' ids come from one identity per
//!   table, unique across stores.) A schema (or a database) per user was
//!   the other choice; catalogs that grow with every user stop scaling at
//!   tens of thousands of users, and every new item type would be a
//!   migration of every schema.
//! - **Statements** keep `?` parameters; the PostgreSQL backend numbers
//!   them (`$1`, `$2`…) when it prepares a statement. A failed statement
//!   leaves its transaction going on both (a savepoint each on
//!   PostgreSQL). Upserts name their conflict's columns; on PostgreSQL the
//!   backend puts `_store` first among them, as it is in every key.
//! - **Schema**: the site's tables, and every item type's, are made when
//!   the site opens, under an advisory lock, so that no store's write
//!   changes shared tables (it would wait for every other store writing to
//!   them, unseen by the store's deadlock check). `_types` is the site's.
//! - **Upgrades**: a type at a new version is upgraded when the site
//!   opens, all at once for a small table; a large one is set aside and
//!   moved store by store, each store's items when it next opens, the rest
//!   in the background ([`postgres::upgrades`]), as SQLite upgrades a large
//!   table of one store a batch at a time.
//! - **Writes** to one store run one at a time across every node: each
//!   takes a transaction-level advisory lock on the store's id, as writers
//!   of one SQLite file take its lock. Read committed under that lock sees
//!   every write before it, so no write fails for another's (closures run
//!   once and cannot be retried).
//! - **Transactions** stay closures that run on the store's own threads
//!   (the writer pool, the reader threads), never on an async worker: on
//!   PostgreSQL those threads hold pooled connections and wait on them, as
//!   they wait on the disk here.
//! - **Types**: SQLite keeps `REAL` and `BLOB`; PostgreSQL `double
//!   precision` and `bytea`. Decimals are text on both (compared by value
//!   through [`crate::sql::push_operand`]); text compares by code point on
//!   both (`COLLATE "C"` there).

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::item::ItemType;
use crate::schema::Internal;
use crate::value::{AttrKind, Value};

pub(crate) use postgres::PgPool;
pub(crate) use sqlite::ddl::Sqlite;
pub(crate) use sqlite::{is_missing_column, is_missing_table};

/// The engine a store runs on, chosen when its site is opened: what it
/// writes differently ([`Dialect`]), called through one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// Calls the [`Dialect`] of `$engine`.
macro_rules! dialect {
    ($engine:expr, $f:ident($($arg:expr),*)) => {
        match $engine {
            Engine::Sqlite => <Sqlite as Dialect>::$f($($arg),*),
            Engine::Postgres => <postgres::ddl::Postgres as Dialect>::$f($($arg),*),
        }
    };
}

impl Engine {
    /// The column type an attribute of `kind` is kept in.
    pub(crate) fn column_type(self, kind: AttrKind) -> &'static str {
        dialect!(self, column_type(kind))
    }
    pub(crate) fn create_table(self, t: &ItemType, table: &str) -> String {
        dialect!(self, create_table(t, table))
    }
    pub(crate) fn create_indexes(self, t: &ItemType) -> String {
        dialect!(self, create_indexes(t))
    }
    pub(crate) fn ref_triggers(self, t: &ItemType) -> Vec<Trigger> {
        dialect!(self, ref_triggers(t))
    }
    pub(crate) fn drop_trigger(self, trigger: &Trigger) -> String {
        dialect!(self, drop_trigger(trigger))
    }
    /// The statements that make a group of the store's own tables when it
    /// is first needed. (On PostgreSQL they are shared by every store and
    /// made with the site: none.)
    pub(crate) fn internal_tables(self, group: Internal) -> &'static [&'static str] {
        match self {
            Engine::Sqlite => sqlite::ddl::internal_tables(group),
            Engine::Postgres => &[],
        }
    }
    /// What a new store has from the start.
    pub(crate) fn core_tables(self) -> &'static str {
        match self {
            Engine::Sqlite => sqlite::ddl::CORE_TABLES,
            Engine::Postgres => "",
        }
    }
    /// An SQL expression for a new random identity: 32 hexadecimal digits
    /// from the engine's own strong source of randomness.
    pub(crate) fn random_id(self) -> &'static str {
        match self {
            Engine::Sqlite => sqlite::ddl::RANDOM_ID,
            Engine::Postgres => postgres::ddl::RANDOM_ID,
        }
    }
    /// The statements that bring a store of format 1 to format 2 (only
    /// SQLite stores were ever of format 1).
    pub(crate) fn format_2(self) -> &'static str {
        sqlite::ddl::FORMAT_2
    }
    /// The queries an opening store reads `_meta` and `_types` with: this
    /// format's, then format 1's. Versions and `_meta` values may come as
    /// text ([`crate::schema::int`] reads both).
    pub(crate) fn first_read(self) -> &'static [&'static str] {
        match self {
            Engine::Sqlite => crate::schema::FIRST_READ,
            Engine::Postgres => postgres::ddl::FIRST_READ,
        }
    }
    /// Records that a store holds `t` at its version, with its shape;
    /// `_types` is per store on SQLite and per site on PostgreSQL, where
    /// item tables are shared, and another store may have recorded it.
    pub(crate) fn record_type(self) -> &'static str {
        match self {
            Engine::Sqlite => "INSERT INTO _types (name, version, shape) VALUES (?, ?, ?)",
            Engine::Postgres => postgres::ddl::RECORD_TYPE,
        }
    }
}

/// Where a store's rows are.
#[derive(Clone)]
pub(crate) enum Location {
    /// In its own SQLite file.
    File,
    /// In the site's PostgreSQL database, under the store's id.
    Postgres {
        pool: PgPool,
        id: i64,
        /// What error messages call the store.
        label: PathBuf,
    },
}

impl Location {
    /// A new connection to the store, which was opened before.
    pub(crate) fn connect(&self, path: &Path) -> Result<Conn> {
        match self {
            Location::File => Ok(Conn::Sqlite(sqlite::Conn::reopen(path)?)),
            Location::Postgres { pool, id, label } => Ok(Conn::Postgres(postgres::StoreConn::new(
                pool,
                *id,
                label.clone(),
            )?)),
        }
    }

    /// Opens the store (creating its file if asked), returning a
    /// connection and what the store's `_meta` and `_types` hold: `None`
    /// for a store that has nothing yet.
    pub(crate) fn open(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<(Conn, Option<Vec<Vec<Value<'static>>>>)> {
        match self {
            Location::File => {
                let (c, first) = sqlite::Conn::open_store(path, create, crate::schema::FIRST_READ)?;
                Ok((Conn::Sqlite(c), first))
            }
            Location::Postgres { .. } => {
                let conn = self.connect(path)?;
                conn.begin_read()?;
                let rows = conn.rows(postgres::ddl::FIRST_READ[0], &[]);
                conn.rollback();
                let rows = rows?;
                // `_types` is the site's: a store is new until it has `_meta`.
                let known = rows
                    .iter()
                    .any(|r| r.first() == Some(&Value::Text("meta".into())));
                Ok((conn, known.then_some(rows)))
            }
        }
    }
}

impl Conn {
    /// Opens a SQLite store file (a copy, a backup, an import).
    pub(crate) fn open_file(path: &Path, create: bool) -> Result<Conn> {
        Ok(Conn::Sqlite(sqlite::Conn::open(path, create)?))
    }
}

/// One connection of a store, on its engine.
#[derive(Debug)]
pub(crate) enum Conn {
    Sqlite(sqlite::Conn),
    Postgres(postgres::StoreConn),
}

/// Calls the same method on either connection.
macro_rules! each {
    ($conn:expr, $c:ident => $e:expr) => {
        match $conn {
            Conn::Sqlite($c) => $e,
            Conn::Postgres($c) => $e,
        }
    };
}

impl Conn {
    pub(crate) fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// The store's file, or on PostgreSQL the name it is known by in error
    /// messages.
    pub(crate) fn path(&self) -> &Path {
        each!(self, c => c.path())
    }

    /// Runs statements that take no parameters, `;`-separated.
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        each!(self, c => c.batch(sql))
    }

    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize> {
        each!(self, c => c.execute(sql, params))
    }

    /// Runs an `INSERT` into a table with an `id` and returns the new id.
    pub(crate) fn insert(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        each!(self, c => c.insert(sql, params))
    }

    /// [`Conn::insert`] of a row that nothing in the database can refuse
    /// ([`crate::item::Registry::insert_refusable`]): on PostgreSQL,
    /// without the savepoint a statement in a write otherwise runs under.
    pub(crate) fn insert_unguarded(&self, sql: &str, params: &[Value<'_>]) -> Result<i64> {
        match self {
            Conn::Sqlite(c) => c.insert(sql, params),
            Conn::Postgres(c) => c.insert_unguarded(sql, params),
        }
    }

    /// Runs a query, handing each row to `f` as a [`Row`].
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&mut Row<'_>) -> Result<()>,
    ) -> Result<()> {
        each!(self, c => c.query(sql, params, f))
    }

    /// Runs a query and collects its rows.
    pub(crate) fn rows(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Vec<Value<'static>>>> {
        each!(self, c => c.rows(sql, params))
    }

    /// The first column of the first row, if any.
    pub(crate) fn scalar(&self, sql: &str, params: &[Value<'_>]) -> Result<Option<Value<'static>>> {
        each!(self, c => c.scalar(sql, params))
    }

    /// Starts the store's write transaction, once no other writer of the
    /// store (in this process or, on PostgreSQL, on any node) has one. (On
    /// PostgreSQL, sent with its first statement, which waits for the
    /// other nodes' writers.)
    pub(crate) fn begin_write(&self) -> Result<()> {
        each!(self, c => c.begin_write())
    }

    /// Starts a read transaction: one snapshot until it ends.
    pub(crate) fn begin_read(&self) -> Result<()> {
        each!(self, c => c.begin_read())
    }

    pub(crate) fn commit(&self) -> Result<()> {
        each!(self, c => c.commit())
    }

    /// Commits, announcing `change` to every node of a site on PostgreSQL
    /// in the same round trip (see `changes.rs`); on SQLite, the caller
    /// announces it in this process once this has returned.
    pub(crate) fn commit_announcing(&self, change: Option<&crate::changes::Change>) -> Result<()> {
        match (self, change) {
            (Conn::Postgres(c), Some(change)) => c.commit_announcing(&change.payload()),
            _ => self.commit(),
        }
    }

    /// Ends the transaction, if one is open, discarding its changes.
    pub(crate) fn rollback(&self) {
        each!(self, c => c.rollback())
    }

    pub(crate) fn in_transaction(&self) -> bool {
        each!(self, c => c.in_transaction())
    }

    /// Makes the store's file whole (SQLite's log folded back into it);
    /// nothing to do on a server.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.checkpoint(),
            Conn::Postgres(_) => Ok(()),
        }
    }

    /// Forgets the statements prepared so far (those an opening ran once).
    pub(crate) fn forget_statements(&self) {
        if let Conn::Sqlite(c) = self {
            c.forget_statements()
        }
    }

    /// Runs `f`, which changes the schema, in the write transaction on
    /// this connection (SQLite: each store has its own tables), or in one
    /// of its own, committed at once (PostgreSQL: the tables are shared;
    /// see [`postgres::StoreConn::schema_change`]).
    pub(crate) fn schema_change(&self, f: impl FnOnce(&Conn) -> Result<()>) -> Result<()> {
        match self {
            Conn::Sqlite(_) => f(self),
            Conn::Postgres(c) => c.schema_change(f),
        }
    }

    /// Refuses, naming `what`, work that only a SQLite store can do yet.
    pub(crate) fn sqlite_only(&self, what: &str) -> Result<()> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(_) => Err(StoreError::Database {
                path: self.path().to_path_buf(),
                reason: format!("{what} is not built yet for a store on PostgreSQL"),
            }),
        }
    }
}

/// One row of a query's result: its values in column order, as owned
/// [`Value`]s, one at a time.
pub(crate) enum Row<'r> {
    /// Read from SQLite's row as it is taken.
    Sqlite(sqlite::Row<'r>),
    /// Already read (PostgreSQL's driver hands whole rows).
    Values(std::vec::IntoIter<Value<'static>>),
}

impl Iterator for Row<'_> {
    type Item = Value<'static>;

    fn next(&mut self) -> Option<Value<'static>> {
        match self {
            Row::Sqlite(r) => r.next(),
            Row::Values(v) => v.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Row::Sqlite(r) => r.size_hint(),
            Row::Values(v) => v.size_hint(),
        }
    }
}

/// After rows were copied into `table` with their ids: new rows' ids come
/// after them. (SQLite's `AUTOINCREMENT` keeps past every id written; a
/// PostgreSQL identity is a sequence the copy must move on.)
pub(crate) fn ids_past_copied(conn: &Conn, table: &str) -> Result<()> {
    if conn.engine() == Engine::Sqlite {
        return Ok(());
    }
    let Some(Value::Text(sequence)) = conn.scalar(
        "SELECT pg_get_serial_sequence(?, 'id')",
        &[Value::Text(crate::sql::ident(table).into())],
    )?
    else {
        return Ok(());
    };
    // The sequence is every store's: it only ever moves on.
    conn.execute(
        &format!(
            "SELECT setval(CAST(CAST(? AS TEXT) AS regclass), GREATEST((SELECT MAX(id) FROM {}), (SELECT last_value FROM {sequence})))",
            crate::sql::ident(table)
        ),
        &[Value::Text(sequence.clone())],
    )?;
    Ok(())
}

/// Whether the store has a table called `name`.
pub(crate) fn table_exists(conn: &Conn, name: &str) -> Result<bool> {
    match conn {
        Conn::Sqlite(_) => sqlite::introspect::table_exists(conn, name),
        Conn::Postgres(_) => postgres::ddl::table_exists(conn, name),
    }
}

/// The columns of `table` other than `id` (and PostgreSQL's `_store`), in
/// order: name, type as [`Engine::column_type`] writes it, and whether it
/// is `NOT NULL`.
pub(crate) fn table_columns(conn: &Conn, table: &str) -> Result<Vec<(String, String, bool)>> {
    match conn {
        Conn::Sqlite(_) => sqlite::introspect::table_columns(conn, table),
        Conn::Postgres(_) => postgres::ddl::table_columns(conn, table),
    }
}

/// Rows of (name, type, not null) as [`table_columns`] gives them.
fn column_rows(rows: Vec<Vec<Value<'static>>>) -> Vec<(String, String, bool)> {
    rows.into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let name = crate::schema::text(it.next())?;
            let ty = crate::schema::text(it.next())?;
            let not_null = crate::schema::int(it.next())? != 0;
            Some((name, ty, not_null))
        })
        .collect()
}

/// What the engine's own check finds wrong with the store (nothing: empty).
pub(crate) fn integrity_problems(conn: &Conn) -> Result<Vec<String>> {
    match conn {
        Conn::Sqlite(_) => sqlite::introspect::integrity_problems(conn),
        // The server keeps its own files whole; what the store checks
        // above the engine (references, files) is checked on both.
        Conn::Postgres(_) => Ok(Vec::new()),
    }
}

/// Moves the store's items of types being upgraded store by store into
/// their upgraded tables (PostgreSQL: `postgres/upgrades.rs`; on SQLite a
/// store upgrades its own file, and nothing moves). In the store's write
/// transaction.
pub(crate) fn move_upgraded_items(conn: &Conn, registry: &crate::item::Registry) -> Result<()> {
    match conn {
        Conn::Sqlite(_) => Ok(()),
        Conn::Postgres(_) => postgres::upgrades::move_rows(conn, registry),
    }
}

/// The bytes a store takes. On SQLite: its file and write-ahead log. On
/// PostgreSQL: the size of its rows in the shared tables (their share of
/// indexes and of free space belongs to no one store, and is not counted).
pub(crate) fn stored_bytes(conn: &Conn) -> Result<u64> {
    match conn {
        Conn::Sqlite(c) => {
            let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut wal = c.path().as_os_str().to_os_string();
            wal.push("-wal");
            Ok(len(c.path()) + len(Path::new(&wal)))
        }
        Conn::Postgres(_) => postgres::stored_bytes(conn),
    }
}

/// Writes a consistent copy of the store to the SQLite file `dest`.
pub(crate) fn copy_into(conn: &Conn, dest: &Path) -> Result<()> {
    conn.sqlite_only("copying a store to a file")?;
    sqlite::maintenance::copy_into(conn, dest)
}

/// Makes a copy one file, with no `-wal` beside it.
pub(crate) fn as_single_file(conn: &Conn) -> Result<()> {
    sqlite::maintenance::as_single_file(conn)
}

/// Puts table `new` in place of `table` during an upgrade.
pub(crate) fn replace_table(conn: &Conn, table: &str, new: &str) -> Result<()> {
    conn.sqlite_only("upgrading an item type")?;
    sqlite::maintenance::replace_table(conn, table, new)
}

/// While an upgrade fills `new`, the triggers that keep it true to `t`'s
/// table.
pub(crate) fn upgrade_triggers(conn: &Conn, t: &ItemType, new: &str) -> Result<String> {
    conn.sqlite_only("upgrading an item type")?;
    Ok(sqlite::ddl::upgrade_triggers(t, new))
}

/// The table an export keeps attached files in (exports are SQLite files).
pub(crate) const EXPORT_FILES_TABLE: &str = sqlite::ddl::EXPORT_FILES_TABLE;

/// What the engines write differently about an item type's table: its
/// columns' types, the table, its indexes, and the triggers that enforce
/// its references. SQLite ([`sqlite::ddl::Sqlite`]) and PostgreSQL
/// ([`postgres::ddl::Postgres`]) implement it; the store calls it through
/// [`Engine`].
pub(crate) trait Dialect {
    /// The column type an attribute of `kind` is kept in.
    fn column_type(kind: AttrKind) -> &'static str;
    /// The definitions of `t`'s attributes' columns: name, type, `NOT
    /// NULL` unless optional, and the default an upgrade that adds the
    /// attribute fills it with.
    fn columns(t: &ItemType) -> Vec<String> {
        t.attrs
            .iter()
            .map(|a| {
                let mut c = format!(
                    "{} {}",
                    crate::sql::ident(a.name),
                    Self::column_type(a.kind)
                );
                if !a.nullable {
                    c.push_str(" NOT NULL");
                }
                if let Some(d) = a.default {
                    c.push_str(" DEFAULT ");
                    c.push_str(d);
                }
                c
            })
            .collect()
    }
    /// The statements that create `t`'s table, called `table` (its own, or
    /// the one an upgrade fills).
    fn create_table(t: &ItemType, table: &str) -> String;
    /// `t`'s indexes and delete trigger (made after an upgrade has filled
    /// the table: faster than keeping them up meanwhile).
    fn create_indexes(t: &ItemType) -> String;
    /// The triggers that enforce `t`'s references, on its table and on
    /// those it refers to.
    fn ref_triggers(t: &ItemType) -> Vec<Trigger>;
    /// Drops `trigger`, if it is there.
    fn drop_trigger(trigger: &Trigger) -> String;
}

/// One trigger that enforces a reference.
pub(crate) struct Trigger {
    pub(crate) name: String,
    /// The table it is defined on.
    pub(crate) on_table: String,
    pub(crate) sql: String,
}
#[cfg(test)]
mod tests {
    /// Words of SQL that only PostgreSQL reads.
    const POSTGRES_ONLY: &[&str] = &[
        "pg_",
        "set_config",
        "RETURNING",
        "BYTEA",
        "GENERATED",
        "NOTIFY",
        "ILIKE",
        "regclass",
    ];

    /// Words of SQL that only SQLite reads (or reads differently): the
    /// backend's business, not the rest of the store's.
    const SQLITE_ONLY: &[&str] = &[
        "AUTOINCREMENT",
        "STRICT",
        "WITHOUT ROWID",
        "INSERT OR ",
        "VACUUM",
        "PRAGMA",
        "pragma_",
        "sqlite_",
        "legacy_alter_table",
        "TRIGGER",
        "RAISE(",
        "randomblob",
        "journal_mode",
    ];

    #[test]
    fn engine_specific_sql_stays_in_the_backend() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            // The tests' own set-up (`testing.rs`) makes roles on a server.
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("testing.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for word in SQLITE_ONLY.iter().chain(POSTGRES_ONLY) {
                    if line.contains(word) {
                        found.push(format!("{}:{}: {word}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "SQL only one engine reads, outside backend/:\n{}",
            found.join("\n")
        );
    }
}
