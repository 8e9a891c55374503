//! Item types upgraded in the background on PostgreSQL, store by store.
//!
//! On SQLite each store upgrades its own file when it opens, a large one
//! a batch at a time in the background. On PostgreSQL a type's table is
//! shared by every store of the site, so a site of many users would wait,
//! at the first start of a new program, for every one of their items to
//! go through the upgraders. Instead, when the table is large
//! ([`BACKGROUND_ROWS`] items over all stores):
//!
//! 1. The node that starts first with the new program, under the schema
//!    lock, renames the table to `<table>__v<from>` (taking away its
//!    triggers and secondary indexes, and holding it no longer to
//!    row-level security: only this module reads it, naming the store),
//!    makes the new table in its place with the id sequence moved on past
//!    every old id, records the type at its new version, and notes the
//!    move in `_upgrading`.
//! 2. Each store moves its own items when it is next opened, in one write
//!    transaction under the store's lock and a shared hold of the schema
//!    lock ([`move_rows`]): read from the old table, upgraded by the same
//!    chain of upgraders as on SQLite, written to the new one with their
//!    ids. So no item of an old version ever reaches code written for the
//!    new one, and a store nobody opens costs nothing meanwhile.
//! 3. Every node started with the program opens, a store at a time in a
//!    thread of its own, the stores that still have items in the old
//!    table ([`next_store`]); when none has, the old table is dropped and
//!    the move forgotten ([`finish`]), under the schema lock held
//!    exclusively, so that no store is moving meanwhile.
//!
//! Types that refer to themselves upgrade at once, as small tables do: a
//! store's items move in id order, and an item whose reference points to a
//! later one would be refused by the new table's reference check.
//!
//! Nodes of the old program must be stopped first, as for any upgrade of
//! a site on PostgreSQL: they would read the new table with the old shape.

use crate::backend::Conn;
use crate::error::Result;
use crate::item::{ItemType, Registry};
use crate::sql::ident;
use crate::value::Value;

use super::PgPool;
use super::ddl::{self, SCHEMA_LOCK};

/// More items than this, over all stores, and a type's upgrade moves
/// them store by store (as on SQLite, where it is per store).
pub(crate) const BACKGROUND_ROWS: i64 = crate::schema::BACKGROUND_ROWS as i64;

/// PostgreSQL's longest name; a longer one would be cut short, and the
/// old table not found by the name kept for it.
const MAX_NAME: usize = 63;

/// A type whose items are moving from `old`, at version `from`.
struct Moving {
    name: String,
    from: u32,
    old: String,
}

fn moving(rows: Vec<Vec<Value<'static>>>) -> Vec<Moving> {
    rows.into_iter()
        .filter_map(|row| {
            let mut it = row.into_iter();
            let name = crate::schema::text(it.next())?;
            let from = crate::schema::int(it.next())? as u32;
            let old = crate::schema::text(it.next())?;
            Some(Moving { name, from, old })
        })
        .collect()
}

const PENDING: &str = "SELECT name, from_version, old_table FROM _upgrading ORDER BY name";

/// Whether the site has items still to move.
pub(crate) fn any_pending(pool: &PgPool) -> Result<bool> {
    Ok(pool
        .get()?
        .scalar("SELECT 1 FROM _upgrading LIMIT 1", &[])?
        .is_some())
}

/// In the site's opening transaction, under the schema lock: starts the
/// upgrade of `t` (the `i`th registered type) from version `from` in the
/// background, if its table is large enough to be worth it and nothing
/// about it asks for all at once. Says whether it did; if not, nothing
/// changed.
pub(crate) fn start(
    conn: &Conn,
    registry: &Registry,
    i: usize,
    t: &ItemType,
    from: u32,
) -> Result<bool> {
    use crate::backend::Dialect;
    let table = t.table();
    let old = format!("{table}__v{from}");
    let refers_to_itself = t.attrs.iter().any(|a| a.references == Some(t.name));
    if refers_to_itself || old.len() > MAX_NAME {
        return Ok(false);
    }
    if conn
        .scalar(
            "SELECT 1 FROM _upgrading WHERE name = ?",
            &[Value::Text(t.name.into())],
        )?
        .is_some()
    {
        // An earlier move of this type has not ended: all of it now.
        return Ok(false);
    }
    super::check_upgraders(conn, registry, t, from)?;
    // Counted over every store: the table's owner is held to row-level
    // security only while it is forced.
    let t_id = ident(&table);
    conn.batch(&format!("ALTER TABLE {t_id} NO FORCE ROW LEVEL SECURITY"))?;
    let items =
        crate::schema::int(conn.scalar(&format!("SELECT COUNT(*) FROM {t_id}"), &[])?).unwrap_or(0);
    if items <= BACKGROUND_ROWS {
        conn.batch(&format!("ALTER TABLE {t_id} FORCE ROW LEVEL SECURITY"))?;
        return Ok(false);
    }
    tracing::info!(
        item = t.name,
        from,
        to = t.version,
        items,
        "upgrading an item type store by store, in the background"
    );
    // The old table keeps its rows and its primary key, nothing else: no
    // trigger may fire as its rows leave (they would delete what refers
    // to them), and its indexes' names are the new table's.
    let named = Value::Text(t_id.clone().into());
    for row in conn.rows(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = to_regclass(?) AND NOT tgisinternal",
        std::slice::from_ref(&named),
    )? {
        if let Some(trigger) = crate::schema::text(row.into_iter().next()) {
            conn.batch(&format!("DROP TRIGGER {} ON {t_id}", ident(&trigger)))?;
        }
    }
    for row in conn.rows(
        "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
         WHERE x.indrelid = to_regclass(?) AND NOT x.indisprimary",
        std::slice::from_ref(&named),
    )? {
        if let Some(index) = crate::schema::text(row.into_iter().next()) {
            conn.batch(&format!("DROP INDEX {}", ident(&index)))?;
        }
    }
    let old_sequence = super::id_sequence(conn, &table)?;
    conn.batch(&format!("ALTER TABLE {t_id} RENAME TO {}", ident(&old)))?;
    conn.batch(&ddl::Postgres::create_table(t, &table))?;
    conn.batch(&ddl::Postgres::create_indexes(t))?;
    super::ids_go_on_from(conn, &table, &old_sequence)?;
    super::upgraded_table_in_place(conn, registry, i, t)?;
    conn.execute(
        "INSERT INTO _upgrading (name, from_version, old_table) VALUES (?, ?, ?)",
        &[
            Value::Text(t.name.into()),
            Value::Integer(from.into()),
            Value::Text(old.into()),
        ],
    )?;
    Ok(true)
}

/// In the site's opening transaction, under the schema lock: moves every
/// store's items of `t` that an earlier start left in the old table, all
/// at once, and forgets the move. For a type upgraded again before its
/// last move ended (its new table is upgraded first).
pub(crate) fn finish_now(conn: &Conn, registry: &Registry, t: &ItemType) -> Result<()> {
    let pending = moving(conn.rows(PENDING, &[])?);
    let Some(m) = pending.into_iter().find(|m| m.name == t.name) else {
        return Ok(());
    };
    let stores = conn.rows(
        &format!("SELECT DISTINCT _store FROM {}", ident(&m.old)),
        &[],
    )?;
    for row in stores {
        let Some(store) = crate::schema::int(row.into_iter().next()) else {
            continue;
        };
        conn.execute(
            "SELECT set_config('mantissa.store', ?, true)",
            &[Value::Text(store.to_string().into())],
        )?;
        move_type(conn, registry, t, &m)?;
    }
    conn.execute("SELECT set_config('mantissa.store', '', true)", &[])?;
    forget(conn, &m)
}

fn forget(conn: &Conn, m: &Moving) -> Result<()> {
    conn.batch(&format!("DROP TABLE {}", ident(&m.old)))?;
    conn.execute(
        "DELETE FROM _upgrading WHERE name = ?",
        &[Value::Text(m.name.clone().into())],
    )?;
    Ok(())
}

/// In a write transaction of the store being opened: moves its items of
/// every type still moving into the type's new table, upgraded. Reads
/// the moves again under a shared hold of the schema lock, so that none
/// is forgotten (its old table dropped) meanwhile.
pub(crate) fn move_rows(conn: &Conn, registry: &Registry) -> Result<()> {
    conn.batch(&format!(
        "SELECT pg_advisory_xact_lock_shared({SCHEMA_LOCK})"
    ))?;
    for m in moving(conn.rows(PENDING, &[])?) {
        // A type the program no longer has stays where it is.
        if let Some(t) = registry.types().iter().find(|t| t.name == m.name) {
            move_type(conn, registry, t, &m)?;
        }
    }
    Ok(())
}

/// Moves the transaction's store's items of `t` out of `m`'s old table.
fn move_type(conn: &Conn, registry: &Registry, t: &ItemType, m: &Moving) -> Result<()> {
    let (columns, select) = crate::upgrade::stored_columns(conn, &m.old)?;
    let mine = format!("_store = {}", ddl::CURRENT_STORE);
    let rows = conn.rows(
        &format!(
            "SELECT {select} FROM {} WHERE {mine} ORDER BY id",
            ident(&m.old)
        ),
        &[],
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let insert = crate::sql::insert(t, &t.table(), true);
    let label = conn.path().to_path_buf();
    let n = rows.len();
    for row in rows {
        let upgraded = crate::upgrade::upgraded_row(registry, &label, t, m.from, &columns, row)?;
        conn.execute(&insert, &upgraded)?;
    }
    conn.execute(&format!("DELETE FROM {} WHERE {mine}", ident(&m.old)), &[])?;
    tracing::debug!(store = %label.display(), item = t.name, items = n, "moved to the upgraded table");
    Ok(())
}

/// A store (its key in `_stores`) that still has items to move, if any.
pub(crate) fn next_store(pool: &PgPool) -> Result<Option<String>> {
    let conn = pool.get()?;
    for m in moving(conn.rows(PENDING, &[])?) {
        // The old table may be gone since the moves were read: then that
        // move is over.
        let query = format!(
            "SELECT s.name FROM {} o JOIN _stores s ON s.id = o._store LIMIT 1",
            ident(&m.old)
        );
        let gone = conn
            .scalar(
                "SELECT 1 WHERE to_regclass(quote_ident($1)) IS NULL",
                &[Value::Text(m.old.clone().into())],
            )?
            .is_some();
        if gone {
            continue;
        }
        if let Some(name) = crate::schema::text(conn.scalar(&query, &[])?) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Ends every move whose old table is empty (rows of stores deleted since
/// are dropped with it), under the schema lock held exclusively, so that
/// no store is moving meanwhile; says whether any move is left.
pub(crate) fn finish(pool: &PgPool) -> Result<bool> {
    pool.get()?.batch(&format!(
        "DO $finish$ DECLARE m RECORD; empty BOOLEAN; BEGIN
             PERFORM pg_advisory_xact_lock({SCHEMA_LOCK});
             FOR m IN SELECT name, old_table FROM _upgrading LOOP
                 EXECUTE format('DELETE FROM %I WHERE _store NOT IN (SELECT id FROM _stores)', m.old_table);
                 EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I)', m.old_table) INTO empty;
                 IF empty THEN
                     EXECUTE format('DROP TABLE %I', m.old_table);
                     DELETE FROM _upgrading WHERE name = m.name;
                 END IF;
             END LOOP;
         END $finish$"
    ))?;
    any_pending(pool)
}
