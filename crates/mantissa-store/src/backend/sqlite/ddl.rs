//! SQLite's DDL: the tables, indexes and triggers of item types, the
//! store's own tables, and the column types attributes are kept in.
//!
//! Everything here is SQLite's dialect (`STRICT` tables, `AUTOINCREMENT`
//! ids, triggers with `RAISE(ABORT, …)`); the rest of the store asks for
//! these through [`crate::backend`] and writes only portable SQL itself.

use crate::backend::{Dialect, Trigger};
use crate::item::{ItemType, OnDelete, table_name};
use crate::schema::Internal;
use crate::sql::ident;
use crate::value::AttrKind;

/// SQLite's dialect.
pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    /// The column type an attribute of `kind` is kept in.
    fn column_type(kind: AttrKind) -> &'static str {
        match kind {
            AttrKind::Integer | AttrKind::Bool | AttrKind::Timestamp | AttrKind::Ref => "INTEGER",
            AttrKind::Float => "REAL",
            AttrKind::Text | AttrKind::Decimal | AttrKind::Json => "TEXT",
            AttrKind::Bytes => "BLOB",
        }
    }

    /// The statements that create an item type's table, indexes and clean-up
    /// trigger, for a table called `table` (the type's own table, or the
    /// temporary one an upgrade fills).
    fn create_table(t: &ItemType, table: &str) -> String {
        let mut cols = vec!["id INTEGER PRIMARY KEY AUTOINCREMENT".to_string()];
        cols.extend(Self::columns(t));
        format!(
            "CREATE TABLE {} ({}) STRICT;\n",
            ident(table),
            cols.join(", ")
        )
    }

    /// Indexes and the delete trigger of a type's table (created after an
    /// upgrade has filled it, which is faster than maintaining them meanwhile).
    fn create_indexes(t: &ItemType) -> String {
        let table = t.table();
        let mut sql = String::new();
        for ix in crate::sql::indexes(t) {
            sql.push_str(&format!(
                "CREATE {}INDEX {} ON {}({});\n",
                if ix.unique { "UNIQUE " } else { "" },
                ix.name,
                ident(&table),
                ix.columns
            ));
        }
        // Whatever removes an item (a delete, a cascade) also removes what the
        // store keeps about it elsewhere; its files go to a trash list that is
        // emptied after the transaction commits.
        let name = t.name.replace('\'', "''");
        sql.push_str(&format!(
            "CREATE TRIGGER {trigger} AFTER DELETE ON {table} BEGIN
                DELETE FROM _powerups WHERE (provider_type = '{name}' AND provider_id = old.id)
                    OR (target_type = '{name}' AND target_id = old.id);
                DELETE FROM _schedule WHERE item_type = '{name}' AND item_id = old.id;
                INSERT INTO _files_trash(path) SELECT path FROM _files WHERE item_type = '{name}' AND item_id = old.id;
                DELETE FROM _files WHERE item_type = '{name}' AND item_id = old.id;
            END;\n",
            trigger = ident(&format!("{table}__deleted")),
            table = ident(&table),
        ));
        sql
    }

    /// The triggers that enforce `t`'s references: on `t`, that a reference
    /// points to an existing item; on each referenced type's table, the
    /// on-delete rule. Their messages name the item types and the attribute.
    fn ref_triggers(t: &ItemType) -> Vec<Trigger> {
        let table = t.table();
        let mut out = Vec::new();
        for a in t.attrs {
            let Some(target) = a.references else { continue };
            let target_table = table_name(target);
            let col = ident(a.name);
            let missing = format!(
                "{}.{} refers to a {} that does not exist",
                t.name, a.name, target
            )
            .replace('\'', "''");
            for (suffix, event) in [
                ("ins", "INSERT".to_string()),
                ("upd", format!("UPDATE OF {col}")),
            ] {
                let name = format!("{table}__ref_{}_{suffix}", a.name);
                out.push(Trigger {
                    sql: format!(
                        "CREATE TRIGGER {n} BEFORE {event} ON {tt} WHEN NEW.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {tu} WHERE id = NEW.{col}) BEGIN SELECT RAISE(ABORT, '{missing}'); END;\n",
                        n = ident(&name),
                        tt = ident(&table),
                        tu = ident(&target_table),
                    ),
                    name,
                    on_table: table.clone(),
                });
            }
            let name = format!("{table}__ref_{}_del", a.name);
            let sql = match a.on_delete {
                OnDelete::Cascade => format!(
                    "CREATE TRIGGER {n} AFTER DELETE ON {tu} BEGIN DELETE FROM {tt} WHERE {col} = old.id; END;\n",
                    n = ident(&name),
                    tu = ident(&target_table),
                    tt = ident(&table),
                ),
                OnDelete::Nullify => format!(
                    "CREATE TRIGGER {n} AFTER DELETE ON {tu} BEGIN UPDATE {tt} SET {col} = NULL WHERE {col} = old.id; END;\n",
                    n = ident(&name),
                    tu = ident(&target_table),
                    tt = ident(&table),
                ),
                OnDelete::Refuse => {
                    let refused = format!(
                        "cannot delete this {target}: {}.{} still refers to it",
                        t.name, a.name
                    )
                    .replace('\'', "''");
                    format!(
                        "CREATE TRIGGER {n} BEFORE DELETE ON {tu} WHEN EXISTS (SELECT 1 FROM {tt} WHERE {col} = old.id) BEGIN SELECT RAISE(ABORT, '{refused}'); END;\n",
                        n = ident(&name),
                        tu = ident(&target_table),
                        tt = ident(&table),
                    )
                }
            };
            out.push(Trigger {
                name,
                on_table: target_table,
                sql,
            });
        }
        out
    }

    /// Drops `trigger`, if it is there.
    fn drop_trigger(trigger: &Trigger) -> String {
        format!("DROP TRIGGER IF EXISTS {}", ident(&trigger.name))
    }
}

/// What every store has from the start: two pages (and SQLite's own).
/// The rest of the store's own tables are made when first needed
/// ([`Internal`]), and an item type's table with its first item, so that
/// an empty store is a few pages.
pub(crate) const CORE_TABLES: &str = "
CREATE TABLE _meta (key TEXT PRIMARY KEY, value ANY) STRICT, WITHOUT ROWID;
CREATE TABLE _types (name TEXT PRIMARY KEY, version INTEGER NOT NULL, shape TEXT) STRICT, WITHOUT ROWID;
";

/// The statements that make a group of the store's own tables.
pub(crate) fn internal_tables(group: Internal) -> &'static [&'static str] {
    match group {
        Internal::ItemSupport => &[
            "CREATE TABLE IF NOT EXISTS _powerups (id INTEGER PRIMARY KEY, interface TEXT NOT NULL,
                target_type TEXT NOT NULL, target_id INTEGER NOT NULL,
                provider_type TEXT NOT NULL, provider_id INTEGER NOT NULL, priority INTEGER NOT NULL,
                UNIQUE (interface, target_type, target_id, provider_type, provider_id)) STRICT",
            "CREATE TABLE IF NOT EXISTS _schedule (id INTEGER PRIMARY KEY AUTOINCREMENT, item_type TEXT NOT NULL,
                item_id INTEGER NOT NULL, due INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT, UNIQUE (item_type, item_id)) STRICT",
            "CREATE INDEX IF NOT EXISTS _schedule_due ON _schedule (due)",
            "CREATE TABLE IF NOT EXISTS _files (item_type TEXT NOT NULL, item_id INTEGER NOT NULL, name TEXT NOT NULL,
                path TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (item_type, item_id, name)) STRICT",
            "CREATE TABLE IF NOT EXISTS _files_trash (path TEXT NOT NULL) STRICT",
        ],
        Internal::Cursors => &[
            "CREATE TABLE IF NOT EXISTS _cursors (listener TEXT PRIMARY KEY, last_id INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, retry_at INTEGER NOT NULL DEFAULT 0) STRICT",
        ],
        Internal::Outbox => &[
            "CREATE TABLE IF NOT EXISTS _outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL,
                kind TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, answer TEXT,
                attempts INTEGER NOT NULL DEFAULT 0, next_try INTEGER NOT NULL, last_error TEXT) STRICT",
            "CREATE INDEX IF NOT EXISTS _outbox_pending ON _outbox (state, next_try)",
        ],
        Internal::Inbox => &[
            "CREATE TABLE IF NOT EXISTS _inbox (sender_id TEXT NOT NULL, message_id INTEGER NOT NULL,
                answer TEXT NOT NULL, PRIMARY KEY (sender_id, message_id)) STRICT",
        ],
        Internal::Upgrades => &[
            "CREATE TABLE IF NOT EXISTS _upgrades (name TEXT PRIMARY KEY, from_version INTEGER NOT NULL,
                last_id INTEGER NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL) STRICT",
            "CREATE TABLE IF NOT EXISTS _upgrade_redo (name TEXT NOT NULL, id INTEGER NOT NULL,
                PRIMARY KEY (name, id)) STRICT",
        ],
        Internal::DueStores => &[
            "CREATE TABLE IF NOT EXISTS _due_stores (store TEXT PRIMARY KEY, due INTEGER NOT NULL) STRICT",
            "CREATE INDEX IF NOT EXISTS _due_stores_due ON _due_stores (due)",
        ],
    }
}

/// Brings a store of format 1 to format 2 (see `schema::FORMAT`): a shape
/// for each type, an identity for the store, and received messages known
/// by their sender's identity.
pub(crate) const FORMAT_2: &str = "ALTER TABLE _types ADD COLUMN shape TEXT;
     INSERT INTO _meta (key, value) VALUES ('id', lower(hex(randomblob(16))));
     INSERT INTO _meta (key, value) SELECT 'legacy_outbox', COALESCE(MAX(id), 0) FROM _outbox;
     CREATE TABLE _inbox_v2 (sender_id TEXT NOT NULL, message_id INTEGER NOT NULL,
         answer TEXT NOT NULL, PRIMARY KEY (sender_id, message_id)) STRICT;
     INSERT INTO _inbox_v2 (sender_id, message_id, answer)
         SELECT 'name:' || sender, message_id, answer FROM _inbox;
     DROP TABLE _inbox;
     ALTER TABLE _inbox_v2 RENAME TO _inbox;";

/// While an upgrade fills `new`, the triggers that keep it true to the old
/// table: an item deleted there leaves `new`, one changed is upgraded again
/// (`_upgrade_redo`).
pub(crate) fn upgrade_triggers(t: &ItemType, new: &str) -> String {
    let name = t.name.replace('\'', "''");
    format!(
        "CREATE TRIGGER {d} AFTER DELETE ON {old} BEGIN DELETE FROM {new} WHERE id = old.id; END;
         CREATE TRIGGER {u} AFTER UPDATE ON {old} BEGIN DELETE FROM {new} WHERE id = old.id;
             INSERT OR IGNORE INTO _upgrade_redo (name, id) VALUES ('{name}', old.id); END;",
        d = ident(&format!("{}__upgrade_del", t.table())),
        u = ident(&format!("{}__upgrade_upd", t.table())),
        old = ident(&t.table()),
        new = ident(new),
    )
}

/// The table an export keeps attached files in, beside the store's own.
pub(crate) const EXPORT_FILES_TABLE: &str =
    "CREATE TABLE _export_files (path TEXT PRIMARY KEY, data BLOB NOT NULL) STRICT";

/// An SQL expression for a new random identity: 32 hexadecimal digits
/// from the engine's own strong source of randomness.
pub(crate) const RANDOM_ID: &str = "lower(hex(randomblob(16)))";
