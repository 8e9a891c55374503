//! What a store file holds besides items, and bringing a store up to the
//! program's item types when it is opened.
//!
//! A store remembers, per item type, the schema version its items were
//! written at (`_types`). Opening compares that with the types linked into
//! the program: new types get their tables, old versions are upgraded (now
//! if the table is small, in the background if not), and a version newer
//! than the program's refuses the open before anything is changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::backend::Conn;
use crate::error::{Result, StoreError};
use crate::item::{ItemType, Registry};
use crate::sql;
use crate::store::Shared;
use crate::upgrade::{self, Progress};
use crate::value::Value;

/// The store file format this program writes. Bumped only for changes to
/// the tables below, never for item types (those have their own versions).
///
/// 2: every store has an identity of its own (`_meta` key `id`, random,
/// never repeated), and received messages are remembered by their sender's
/// identity, not its name (`_inbox.sender_id`), so that a store deleted and
/// made again under the same name is a new sender.
pub(crate) const FORMAT: i64 = 2;

/// Upgrades of tables larger than this run in the background.
pub(crate) const BACKGROUND_ROWS: u64 = 10_000;

/// The store's own tables beyond the backend's `CORE_TABLES`, each group made the
/// first time something is written to it. Reading a table not made yet
/// reads as empty (`backend::Conn::query`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Internal {
    /// What the store keeps about items besides their tables: powerups,
    /// schedule, attached files. Made with the first item table, whose
    /// delete trigger names them.
    ItemSupport,
    /// Listeners' places in the work queue.
    Cursors,
    /// Messages sent.
    Outbox,
    /// Messages received.
    Inbox,
    /// Schema upgrades in progress.
    Upgrades,
    /// User stores with work due (the site store's).
    DueStores,
}

impl Internal {
    /// Makes the group's tables if they are not there, in the caller's
    /// write transaction. (Prepared once per connection; when the tables
    /// are there, it costs a lookup.)
    pub(crate) fn ensure(self, conn: &Conn) -> Result<()> {
        for sql in conn.engine().internal_tables(self) {
            conn.execute(sql, &[])?;
        }
        Ok(())
    }
}

pub(crate) fn text(v: Option<Value<'static>>) -> Option<String> {
    match v {
        Some(Value::Text(t)) => Some(t.into_owned()),
        _ => None,
    }
}

/// An integer, also as text: `_meta` values and versions are text where
/// the engine has no column of any type (PostgreSQL).
pub(crate) fn int(v: Option<Value<'static>>) -> Option<i64> {
    match v {
        Some(Value::Integer(i)) => Some(i),
        Some(Value::Text(t)) => t.parse().ok(),
        _ => None,
    }
}

/// Brings an opened store up to date; returns the upgrades left to the
/// background.
///
/// `first` is what [`Conn::open_store`] read with [`FIRST_READ`]: `_meta`
/// and `_types`; `None` for a new file.
pub(crate) fn prepare(
    conn: &Conn,
    shared: &Shared,
    first: Option<&[Vec<Value<'static>>]>,
) -> Result<HashMap<String, Progress>> {
    let path = conn.path().to_path_buf();
    let (mut meta, mut stored) = (Meta::default(), HashMap::new());
    for row in first.unwrap_or_default() {
        let mut it = row.iter().cloned();
        let (kind, key, value, shape) = (text(it.next()), text(it.next()), it.next(), it.next());
        meta.read(kind.as_deref(), key, value, text(shape), &mut stored);
    }
    if first.is_none() {
        in_write_transaction(conn, || {
            conn.batch(conn.engine().core_tables())?;
            conn.execute(
                &format!(
                    "INSERT INTO _meta (key, value) VALUES ('format', ?), ('created', ?), ('id', {})",
                    conn.engine().random_id()
                ),
                &[
                    Value::Integer(FORMAT),
                    Value::Integer(crate::Timestamp::now().as_micros()),
                ],
            )
            .map(drop)
        })?;
        (meta, stored) = read_meta(conn)?;
    }
    let format = meta.format.ok_or_else(|| StoreError::NotAStore {
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
    if format < FORMAT {
        in_write_transaction(conn, || upgrade_format(conn))?;
        (meta, stored) = read_meta(conn)?;
    }
    let identity = crate::message::Identity {
        id: meta.id.ok_or_else(|| StoreError::NotAStore {
            path: path.clone(),
            reason: "its _meta table has no id".into(),
        })?,
        legacy_outbox: meta.legacy_outbox,
    };
    let _ = shared.identity.set(identity);
    if meta.moving {
        // Before anything reads them: this store's items of a type being
        // upgraded on PostgreSQL, store by store.
        in_write_transaction(conn, || {
            crate::backend::move_upgraded_items(conn, shared.registry)
        })?;
    }

    let shapes: HashMap<&str, &str> = stored
        .iter()
        .filter_map(|(name, (_, shape))| Some((name.as_str(), shape.as_deref()?)))
        .collect();
    // Everything that would refuse the open is found before anything
    // changes. Types the store has never held have no table yet: it is
    // made when the first item is written ([`create`]).
    let mut old_types: Vec<(&ItemType, u32)> = Vec::new();
    for (i, t) in shared.registry.types().iter().enumerate() {
        let Some(&(v, _)) = stored.get(t.name) else {
            continue;
        };
        shared.tables.set(i, PRESENT);
        match v {
            v if v == t.version => {
                // A table made from the type as it is now (its `CREATE`
                // text kept beside its version) needs no closer look
                // ([`check_columns`]) when it is first used.
                if shapes
                    .get(t.name)
                    .is_some_and(|s| *s == shared.registry.create_sql(i))
                {
                    shared.tables.set(i, READY);
                }
            }
            v if v > t.version => {
                return Err(StoreError::NewerVersion {
                    path,
                    item: t.name.to_string(),
                    stored: v,
                    known: t.version,
                });
            }
            v => {
                upgrade::check_chain(shared, t, v)?;
                old_types.push((t, v));
            }
        }
    }
    if old_types.is_empty() {
        return Ok(HashMap::new());
    }

    in_write_transaction(conn, || {
        // Read again under the write lock: another process (or another
        // handle to the file) may have upgraded meanwhile.
        let now = stored_versions(conn)?;
        let mut background = HashMap::new();
        for &(t, _) in &old_types {
            let v = now.get(t.name).copied().unwrap_or(t.version);
            if v >= t.version {
                continue;
            }
            let progress = upgrade::start(conn, t, v)?;
            if progress.total > BACKGROUND_ROWS {
                tracing::info!(store = %conn.path().display(), item = t.name, items = progress.total, "upgrading in the background");
                background.insert(t.name.to_string(), progress);
            } else {
                upgrade::complete(conn, shared, t)?;
            }
        }
        Ok(background)
    })
}

/// What `_meta` says.
#[derive(Default)]
struct Meta {
    format: Option<i64>,
    id: Option<String>,
    legacy_outbox: i64,
    /// On PostgreSQL, whether items of some type are moving to its
    /// upgraded table (`backend/postgres/upgrades.rs`).
    moving: bool,
}

/// Each stored type's version, and the `CREATE` text of its table when
/// the store has it (format 2 keeps it).
type Stored = HashMap<String, (u32, Option<String>)>;

/// The queries an opening store reads `_meta` and `_types` with, for
/// [`Conn::open_store`]: this format's, then format 1's (no `shape`).
pub(crate) const FIRST_READ: &[&str] = &[
    "SELECT 'meta', key, value, NULL FROM _meta UNION ALL SELECT 'type', name, version, shape FROM _types",
    "SELECT 'meta', key, value, NULL FROM _meta UNION ALL SELECT 'type', name, version, NULL FROM _types",
];

impl Meta {
    /// Takes one row of [`FIRST_READ`]: `("meta", key, value, NULL)`, or
    /// `("type", name, version, shape)` into `types`.
    fn read(
        &mut self,
        kind: Option<&str>,
        key: Option<String>,
        value: Option<Value<'static>>,
        shape: Option<String>,
        types: &mut Stored,
    ) {
        match (kind, key.as_deref()) {
            (Some("meta"), Some("format")) => self.format = int(value),
            (Some("meta"), Some("id")) => self.id = text(value),
            (Some("meta"), Some("legacy_outbox")) => self.legacy_outbox = int(value).unwrap_or(0),
            (Some("moving"), Some(_)) => self.moving = true,
            (Some("type"), Some(_)) => {
                if let (Some(name), Some(v)) = (key, int(value)) {
                    types.insert(name, (v as u32, shape));
                }
            }
            _ => {}
        }
    }
}

/// What `_meta` says, and each item type's stored version and shape.
fn read_meta(conn: &Conn) -> Result<(Meta, Stored)> {
    let mut meta = Meta::default();
    let mut types = HashMap::new();
    // In a transaction: on PostgreSQL, only one that names the store sees
    // its rows.
    conn.begin_read()?;
    let read = conn.query(conn.engine().first_read()[0], &[], |row| {
        let (kind, key, value, shape) =
            (text(row.next()), text(row.next()), row.next(), row.next());
        meta.read(kind.as_deref(), key, value, text(shape), &mut types);
        Ok(())
    });
    conn.rollback();
    read?;
    Ok((meta, types))
}

/// Runs `f` in a write transaction on `conn`, committing if it succeeds.
fn in_write_transaction<R>(conn: &Conn, f: impl FnOnce() -> Result<R>) -> Result<R> {
    conn.begin_write()?;
    match f() {
        Ok(v) => conn.commit().map(|()| v),
        Err(e) => {
            conn.rollback();
            Err(e)
        }
    }
}

/// Brings the internal tables of an older store format up to [`FORMAT`],
/// in the caller's write transaction. Reads the format again there: another
/// process may have done it meanwhile.
fn upgrade_format(conn: &Conn) -> Result<()> {
    let format =
        int(conn.scalar("SELECT value FROM _meta WHERE key = 'format'", &[])?).unwrap_or(FORMAT);
    if format < 2 {
        // Messages this store sent before now were remembered by its name:
        // their receivers still know them by it (`message::deliver_one`).
        // Tables made before have no shape on record: each is compared
        // with its type column by column when first used.
        conn.batch(conn.engine().format_2())?;
    }
    conn.execute(
        "UPDATE _meta SET value = ? WHERE key = 'format'",
        &[Value::Integer(FORMAT)],
    )?;
    Ok(())
}

/// The version each item type with a table is stored at.
fn stored_versions(conn: &Conn) -> Result<HashMap<String, u32>> {
    let mut stored = HashMap::new();
    for row in conn.rows("SELECT name, version FROM _types", &[])? {
        let mut it = row.into_iter();
        if let (Some(name), Some(v)) = (text(it.next()), int(it.next())) {
            stored.insert(name, v as u32);
        }
    }
    Ok(stored)
}

/// What a store knows of an item type's table.
const ABSENT: u8 = 0;
/// There is a table, not yet compared with the type.
const PRESENT: u8 = 1;
/// There is a table, and it matches the type.
const READY: u8 = 2;

/// Which item types have a table in one store, by their index in the
/// registry: known when the store opens (`_types`), then kept up to date
/// as tables are made, so that a query of a type with no table answers
/// "nothing" without asking SQLite.
pub(crate) struct Tables {
    states: Vec<AtomicU8>,
}

impl Tables {
    pub(crate) fn new(registry: &Registry) -> Tables {
        Tables {
            states: registry
                .types()
                .iter()
                .map(|_| AtomicU8::new(ABSENT))
                .collect(),
        }
    }

    fn get(&self, i: usize) -> u8 {
        self.states[i].load(Ordering::Acquire)
    }

    fn set(&self, i: usize, state: u8) {
        self.states[i].store(state, Ordering::Release);
    }

    /// A transaction that made type `i`'s table committed.
    pub(crate) fn created(&self, i: usize) {
        self.set(i, READY);
    }
}

/// Whether items of type `name` can be read in this transaction: `false`
/// when the store has no table for them (so none). On first use, compares
/// the type's fields with its table's columns and refuses a mismatch.
/// `in_write` says whether this is the write transaction, which sees the
/// tables it made itself.
pub(crate) fn has_table(conn: &Conn, shared: &Shared, name: &str, in_write: bool) -> Result<bool> {
    let (i, _) = shared
        .registry
        .position(name)
        .ok_or_else(|| StoreError::UnknownType(name.to_string()))?;
    has_table_at(conn, shared, i, in_write)
}

/// [`has_table`] for the type at index `i` of the registry.
pub(crate) fn has_table_at(conn: &Conn, shared: &Shared, i: usize, in_write: bool) -> Result<bool> {
    let t = &shared.registry.types()[i];
    match shared.tables.get(i) {
        READY => Ok(true),
        PRESENT => {
            check_columns(conn, shared, t)?;
            shared.tables.set(i, READY);
            Ok(true)
        }
        _ => {
            if in_write && upgrade::in_write(shared).created.contains(&i) {
                return Ok(true);
            }
            // Another handle or process may have made it since this store
            // was opened (the command line beside a running server).
            let made = crate::backend::table_exists(conn, &t.table())?;
            if made {
                check_columns(conn, shared, t)?;
                if !in_write {
                    shared.tables.set(i, READY);
                }
            }
            Ok(made)
        }
    }
}

/// Makes the table of type `name`, with its indexes and the triggers of
/// its references, in the write transaction on `conn` — and first those of
/// the types it refers to that have none, which its triggers name.
pub(crate) fn create(conn: &Conn, shared: &Shared, name: &str) -> Result<()> {
    if has_table(conn, shared, name, true)? {
        return Ok(());
    }
    let (i, t) = shared
        .registry
        .position(name)
        .ok_or_else(|| StoreError::UnknownType(name.to_string()))?;
    // Marked first, so that a type that refers to itself, or a cycle of
    // references, ends.
    upgrade::in_write(shared).created.push(i);
    Internal::ItemSupport.ensure(conn)?;
    for a in t.attrs {
        if let Some(target) = a.references {
            create(conn, shared, target)?;
        }
    }
    conn.schema_change(|conn| {
        // Made meanwhile by another store of the site (PostgreSQL, where
        // tables are shared): done, and its table is not touched again,
        // which would wait for every store writing to it.
        if crate::backend::table_exists(conn, &t.table())? {
            return Ok(());
        }
        let engine = conn.engine();
        conn.batch(&engine.create_table(t, &t.table()))?;
        conn.batch(&engine.create_indexes(t))?;
        conn.execute(
            engine.record_type(),
            &[
                Value::Text(t.name.into()),
                Value::Integer(t.version.into()),
                Value::Text(shared.registry.create_sql(i).into()),
            ],
        )?;
        for trig in engine.ref_triggers(t) {
            conn.batch(&trig.sql)?;
        }
        Ok(())
    })
}

/// An error from a statement on the table of the type at index `i`: when
/// SQLite says a column is missing (the table was changed behind the
/// store's back, after the store trusted it), the mismatch, named as
/// [`check_columns`] names it; otherwise `e`.
pub(crate) fn explain(conn: &Conn, shared: &Shared, i: usize, e: StoreError) -> StoreError {
    if !crate::backend::is_missing_column(&e) {
        return e;
    }
    match check_columns(conn, shared, &shared.registry.types()[i]) {
        Err(mismatch) => {
            shared.tables.set(i, PRESENT);
            mismatch
        }
        Ok(()) => e,
    }
}

/// Refuses a table whose columns are not the type's fields: a struct
/// changed without raising its version. (Without this, SQLite would read a
/// field that has no column as its own name in quotes, a string.)
fn check_columns(conn: &Conn, shared: &Shared, t: &ItemType) -> Result<()> {
    let columns = crate::backend::table_columns(conn, &t.table())?;
    let mut differences = Vec::new();
    for a in t.attrs {
        match columns.iter().find(|c| c.0 == a.name) {
            None => differences.push(format!("field {:?} has no column", a.name)),
            Some((_, ty, not_null)) => {
                let wanted = conn.engine().column_type(a.kind);
                if !ty.eq_ignore_ascii_case(wanted) {
                    differences.push(format!(
                        "field {:?} is {wanted} but its column is {ty}",
                        a.name,
                    ));
                }
                if *not_null == a.nullable {
                    differences.push(format!(
                        "field {:?} is {} but its column is {}",
                        a.name,
                        if a.nullable { "optional" } else { "required" },
                        if *not_null { "required" } else { "optional" },
                    ));
                }
            }
        }
    }
    for (name, _, _) in &columns {
        if !t.attrs.iter().any(|a| a.name == name) {
            differences.push(format!("column {name:?} is not a field"));
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(StoreError::SchemaMismatch(Box::new(
        crate::error::SchemaMismatch {
            path: shared.path.clone(),
            item: t.name.to_string(),
            version: t.version,
            differences: differences.join("; "),
        },
    )))
}

/// The problems in a store: SQLite's integrity check, references that point
/// nowhere, and attached files that are missing.
pub(crate) fn check(conn: &Conn, shared: &Shared) -> Result<Vec<String>> {
    let mut problems = crate::backend::integrity_problems(conn)?;
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
        // On PostgreSQL the file is in its row, which cannot lack it.
        if conn.engine() == crate::backend::Engine::Sqlite
            && !shared.files_dir.join(&path).is_file()
        {
            problems.push(format!("file {name:?} of {ty} #{id} is missing ({path})"));
        }
    }
    Ok(problems)
}
