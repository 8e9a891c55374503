//! What SQLite says about a store's own schema and health: whether a table
//! exists, its columns, and its integrity check.

use crate::backend::Conn;
use crate::error::Result;
use crate::schema::text;
use crate::value::Value;

/// Whether the store has a table called `name`.
pub(crate) fn table_exists(conn: &Conn, name: &str) -> Result<bool> {
    Ok(conn
        .scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            &[Value::Text(name.into())],
        )?
        .is_some())
}

/// The columns of `table` other than `id`, in order: name, declared type,
/// and whether it is `NOT NULL`.
pub(crate) fn table_columns(conn: &Conn, table: &str) -> Result<Vec<(String, String, bool)>> {
    let rows = conn.rows(
        "SELECT name, type, \"notnull\" FROM pragma_table_info(?) WHERE name <> 'id' ORDER BY cid",
        &[Value::Text(table.into())],
    )?;
    Ok(crate::backend::column_rows(rows))
}

/// What the engine's own check finds wrong with the file (nothing: empty).
pub(crate) fn integrity_problems(conn: &Conn) -> Result<Vec<String>> {
    Ok(conn
        .rows("PRAGMA integrity_check", &[])?
        .into_iter()
        .filter_map(|row| text(row.into_iter().next()))
        .filter(|msg| msg != "ok")
        .collect())
}
