//! Work on a whole SQLite file: consistent copies of a store in use, a
//! copy made a single self-contained file, and a table put in place of
//! another during an upgrade.

use std::path::Path;

use crate::backend::Conn;
use crate::error::Result;
use crate::sql::ident;
use crate::value::Value;

/// Writes a consistent copy of the store `conn` is open on to `dest`
/// (`VACUUM INTO`: one read transaction, so writers go on meanwhile, and a
/// compact file).
pub(crate) fn copy_into(conn: &Conn, dest: &Path) -> Result<()> {
    conn.execute(
        "VACUUM INTO ?",
        &[Value::Text(dest.to_string_lossy().into_owned().into())],
    )?;
    Ok(())
}

/// Makes a copy one file, with no `-wal` beside it, before it is handed on.
pub(crate) fn as_single_file(conn: &Conn) -> Result<()> {
    conn.batch("PRAGMA journal_mode = DELETE")
}

/// Puts table `new` in place of `table`, keeping `table`'s id sequence (an
/// id is never used twice, even across an upgrade). Triggers on `table`
/// must be dropped first; indexes and triggers are made again after.
pub(crate) fn replace_table(conn: &Conn, table: &str, new: &str) -> Result<()> {
    let old_seq = match conn.scalar(
        "SELECT seq FROM sqlite_sequence WHERE name = ?",
        &[Value::Text(table.to_string().into())],
    )? {
        Some(Value::Integer(n)) => n,
        _ => 0,
    };
    // Other types' triggers name this table, which is gone between the
    // drop and the rename: SQLite's modern rename checks every trigger of
    // the schema and would refuse; the legacy one leaves them be.
    // The old table's pages are overwritten as they are freed
    // (secure_delete): what an upgrader changed (a password it sealed, say)
    // must not stay readable in the file's free pages.
    conn.batch(&format!(
        "PRAGMA legacy_alter_table = ON;
         PRAGMA secure_delete = ON;
         DROP TABLE {old};
         PRAGMA secure_delete = OFF;
         ALTER TABLE {new} RENAME TO {old};
         PRAGMA legacy_alter_table = OFF;",
        old = ident(table),
        new = ident(new),
    ))?;
    let updated = conn.execute(
        "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?",
        &[
            Value::Integer(old_seq),
            Value::Text(table.to_string().into()),
        ],
    )?;
    if updated == 0 && old_seq > 0 {
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
            &[
                Value::Text(table.to_string().into()),
                Value::Integer(old_seq),
            ],
        )?;
    }
    Ok(())
}
