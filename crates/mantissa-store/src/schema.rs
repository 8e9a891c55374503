//! What a store file holds besides items, and bringing a store up to the
//! program's item types when it is opened.
//!
//! A store remembers, per item type, the schema version its items were
//! written at (`_types`). Opening compares that with the types linked into
//! the program: new types get their tables, old versions are upgraded (now
//! if the table is small, in the background if not), and a version newer
//! than the program's refuses the open before anything is changed.

use std::collections::HashMap;

use crate::backend::Conn;
use crate::error::{Result, StoreError};
use crate::item::ItemType;
use crate::sql;
use crate::store::Shared;
use crate::upgrade::{self, Progress};
use crate::value::Value;

/// The store file format this program writes. Bumped only for changes to
/// the tables below, never for item types (those have their own versions).
pub(crate) const FORMAT: i64 = 1;

/// Upgrades of tables larger than this run in the background.
pub(crate) const BACKGROUND_ROWS: u64 = 10_000;

const INTERNAL_TABLES: &str = "
CREATE TABLE _meta (key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE _types (name TEXT PRIMARY KEY, version INTEGER NOT NULL) STRICT;
CREATE TABLE _upgrades (name TEXT PRIMARY KEY, from_version INTEGER NOT NULL,
    last_id INTEGER NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL) STRICT;
CREATE TABLE _upgrade_redo (name TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (name, id)) STRICT;
CREATE TABLE _powerups (id INTEGER PRIMARY KEY, interface TEXT NOT NULL,
    target_type TEXT NOT NULL, target_id INTEGER NOT NULL,
    provider_type TEXT NOT NULL, provider_id INTEGER NOT NULL, priority INTEGER NOT NULL,
    UNIQUE (interface, target_type, target_id, provider_type, provider_id)) STRICT;
CREATE TABLE _schedule (id INTEGER PRIMARY KEY AUTOINCREMENT, item_type TEXT NOT NULL,
    item_id INTEGER NOT NULL, due INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, UNIQUE (item_type, item_id)) STRICT;
CREATE INDEX _schedule_due ON _schedule (due);
CREATE TABLE _files (item_type TEXT NOT NULL, item_id INTEGER NOT NULL, name TEXT NOT NULL,
    path TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (item_type, item_id, name)) STRICT;
CREATE TABLE _files_trash (path TEXT NOT NULL) STRICT;
CREATE TABLE _cursors (listener TEXT PRIMARY KEY, last_id INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, retry_at INTEGER NOT NULL DEFAULT 0) STRICT;
CREATE TABLE _outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, answer TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, next_try INTEGER NOT NULL, last_error TEXT) STRICT;
CREATE INDEX _outbox_pending ON _outbox (state, next_try);
CREATE TABLE _inbox (sender TEXT NOT NULL, message_id INTEGER NOT NULL, answer TEXT NOT NULL,
    PRIMARY KEY (sender, message_id)) STRICT;
CREATE TABLE _due_stores (store TEXT PRIMARY KEY, due INTEGER NOT NULL) STRICT;
CREATE INDEX _due_stores_due ON _due_stores (due);
";

fn text(v: Option<Value<'static>>) -> Option<String> {
    match v {
        Some(Value::Text(t)) => Some(t.into_owned()),
        _ => None,
    }
}

fn int(v: Option<Value<'static>>) -> Option<i64> {
    match v {
        Some(Value::Integer(i)) => Some(i),
        _ => None,
    }
}

/// Brings an opened store up to date; returns the upgrades left to the
/// background.
pub(crate) fn prepare(conn: &Conn, shared: &Shared) -> Result<HashMap<String, Progress>> {
    let path = conn.path().to_path_buf();
    let has_meta = conn
        .scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_meta'",
            &[],
        )?
        .is_some();
    if !has_meta {
        let tables = int(conn.scalar("SELECT COUNT(*) FROM sqlite_master", &[])?).unwrap_or(0);
        if tables > 0 {
            return Err(StoreError::NotAStore {
                path,
                reason: "it is a SQLite database of some other program".into(),
            });
        }
        conn.begin_write()?;
        let init = conn.batch(INTERNAL_TABLES).and_then(|()| {
            conn.execute(
                "INSERT INTO _meta (key, value) VALUES ('format', ?), ('created', ?)",
                &[
                    Value::Integer(FORMAT),
                    Value::Integer(crate::Timestamp::now().as_micros()),
                ],
            )
        });
        match init {
            Ok(_) => conn.commit()?,
            Err(e) => {
                conn.rollback();
                return Err(e);
            }
        }
    }
    let format = int(conn.scalar("SELECT value FROM _meta WHERE key = 'format'", &[])?)
        .ok_or_else(|| StoreError::NotAStore {
            path: path.clone(),
            reason: "its _meta table has no format".into(),
        })?;
    if format > FORMAT {
        return Err(StoreError::NewerFormat {
            path,
            found: format,
            known: FORMAT,
        });
    }

    let mut stored: HashMap<String, u32> = HashMap::new();
    for row in conn.rows("SELECT name, version FROM _types", &[])? {
        let mut it = row.into_iter();
        if let (Some(name), Some(v)) = (text(it.next()), int(it.next())) {
            stored.insert(name, v as u32);
        }
    }

    // Everything that would refuse the open is found before anything changes.
    let mut new_types: Vec<&ItemType> = Vec::new();
    let mut old_types: Vec<(&ItemType, u32)> = Vec::new();
    for t in shared.registry.types() {
        match stored.get(t.name) {
            None => new_types.push(t),
            Some(&v) if v == t.version => {}
            Some(&v) if v > t.version => {
                return Err(StoreError::NewerVersion {
                    path,
                    item: t.name.to_string(),
                    stored: v,
                    known: t.version,
                });
            }
            Some(&v) => {
                upgrade::check_chain(shared, t, v)?;
                old_types.push((t, v));
            }
        }
    }
    if new_types.is_empty() && old_types.is_empty() {
        return Ok(HashMap::new());
    }

    conn.begin_write()?;
    let result = (|| {
        for t in &new_types {
            conn.batch(&sql::create_table(t, &t.table()))?;
            conn.batch(&sql::create_indexes(t))?;
            conn.execute(
                "INSERT INTO _types (name, version) VALUES (?, ?)",
                &[Value::Text(t.name.into()), Value::Integer(t.version.into())],
            )?;
        }
        for t in &new_types {
            for trig in sql::ref_triggers(t) {
                conn.batch(&trig.sql)?;
            }
        }
        let mut background = HashMap::new();
        for &(t, v) in &old_types {
            let progress = upgrade::start(conn, t, v)?;
            if progress.total > BACKGROUND_ROWS {
                tracing::info!(store = %conn.path().display(), item = t.name, items = progress.total, "upgrading in the background");
                background.insert(t.name.to_string(), progress);
            } else {
                upgrade::complete(conn, shared, t)?;
            }
        }
        Ok(background)
    })();
    match result {
        Ok(background) => {
            conn.commit()?;
            Ok(background)
        }
        Err(e) => {
            conn.rollback();
            Err(e)
        }
    }
}

/// The problems in a store: SQLite's integrity check, references that point
/// nowhere, and attached files that are missing.
pub(crate) fn check(conn: &Conn, shared: &Shared) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for row in conn.rows("PRAGMA integrity_check", &[])? {
        if let Some(msg) = text(row.into_iter().next())
            && msg != "ok"
        {
            problems.push(msg);
        }
    }
    let present: HashMap<String, u32> = conn
        .rows("SELECT name, version FROM _types", &[])?
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            Some((text(it.next())?, int(it.next())? as u32))
        })
        .collect();
    for t in shared.registry.types() {
        if present.get(t.name) != Some(&t.version) {
            continue;
        }
        for a in t.attrs {
            let Some(target) = a.references else { continue };
            if !present.contains_key(target) {
                continue;
            }
            let n = int(conn.scalar(
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE {c} IS NOT NULL AND {c} NOT IN (SELECT id FROM {})",
                    sql::ident(&t.table()),
                    sql::ident(&crate::item::table_name(target)),
                    c = sql::ident(a.name)
                ),
                &[],
            )?)
            .unwrap_or(0);
            if n > 0 {
                problems.push(format!(
                    "{n} {} item(s) have a {} reference to a {target} that does not exist",
                    t.name, a.name
                ));
            }
        }
    }
    for row in conn.rows("SELECT item_type, item_id, name, path FROM _files", &[])? {
        let mut it = row.into_iter();
        let (ty, id, name, path) = (
            text(it.next()).unwrap_or_default(),
            int(it.next()).unwrap_or_default(),
            text(it.next()).unwrap_or_default(),
            text(it.next()).unwrap_or_default(),
        );
        if !shared.files_dir.join(&path).is_file() {
            problems.push(format!("file {name:?} of {ty} #{id} is missing ({path})"));
        }
    }
    Ok(problems)
}
