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
//! SQLite (rusqlite) is the backend stores run on today. Of the PostgreSQL
//! one, the connection is built and tested against a real server
//! ([`postgres`]: the same `batch`/`execute`/`insert`/`rows`/`scalar` and
//! transactions, the same [`Value`](crate::Value)s); pointing a store at it
//! comes next. What it will be, so that this boundary is drawn where it
//! will have to be:
//!
//! - **A user store** is a file on SQLite (`users/<name>.sqlite`: copying
//!   it copies the user). On PostgreSQL it is the rows of shared tables
//!   that carry its store id ([`postgres::ddl`]): every item table and
//!   every one of the store's own (`_files`, `_schedule`, `_outbox`…) has
//!   a `store` column, first in its primary key and in every index, which
//!   is the distribution column a Citus cluster shards on. A transaction
//!   names its store once (`SET LOCAL`), and row-level security keeps it
//!   to that store's rows, filling `store` in what it inserts: so the
//!   portable SQL above never names the store, and a mistake in it cannot
//!   reach another user's rows. (The rows' ids come from one identity per
//!   table, unique across stores.) A schema (or a database) per user was
//!   the other choice; catalogs that grow with every user stop scaling at
//!   tens of thousands of users, and every new item type would be a
//!   migration of every schema.
//! - **Statements** keep `?` parameters; the PostgreSQL backend numbers
//!   them (`$1`, `$2`…) when it prepares a statement. A failed statement
//!   leaves its transaction going on both (a savepoint each on
//!   PostgreSQL). Upserts name their conflict's columns, which on
//!   PostgreSQL include `store`: those in `files.rs` and `upgrade.rs` move
//!   here when stores run on it.
//! - **Transactions** stay closures that run on the store's own threads
//!   (the writer pool, the reader threads), never on an async worker: on
//!   PostgreSQL those threads hold pooled connections and wait on them, as
//!   they wait on the disk here.
//! - **Types**: SQLite keeps `REAL` and `BLOB`; PostgreSQL `double
//!   precision` and `bytea`. Decimals are text on both (compared by value
//!   through [`crate::sql::push_operand`]); text compares by code point on
//!   both (`COLLATE "C"` there).

// Its first users are its own tests: the store is pointed at it next.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod postgres;
pub(crate) mod sqlite;

use crate::item::ItemType;
use crate::value::AttrKind;

pub(crate) use sqlite::ddl::{
    CORE_TABLES, EXPORT_FILES_TABLE, FORMAT_2, RANDOM_ID, Sqlite, internal_tables, upgrade_triggers,
};

/// The engine stores run on. (A site on PostgreSQL is the next step: then
/// this is chosen when a site is opened.)
pub(crate) type Engine = Sqlite;

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
pub(crate) use sqlite::introspect::{integrity_problems, table_columns, table_exists};
pub(crate) use sqlite::maintenance::{as_single_file, copy_into, replace_table};
pub(crate) use sqlite::{Conn, Row, is_missing_column, is_missing_table};

#[cfg(test)]
mod tests {
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
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for word in SQLITE_ONLY {
                    if line.contains(word) {
                        found.push(format!("{}:{}: {word}", path.display(), n + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "SQL only SQLite reads, outside backend/:\n{}",
            found.join("\n")
        );
    }
}
