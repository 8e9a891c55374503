//! Schema evolution: upgrading stored items from an older version of their
//! type to the current one.
//!
//! An upgrader turns an item of version N into version N+1, on a loose,
//! name-keyed view of its attributes ([`Upgrading`]); a chain of them brings
//! any old version up to date. Register one with [`upgrader!`](crate::upgrader):
//!
//! ```
//! use mantissa_store::{Item, upgrader};
//!
//! #[derive(Item)]
//! #[item(name = "doc.up.contact", version = 2)]
//! struct Contact { full_name: String, email: Option<String> }
//!
//! // Version 1 called the attribute `name` and had no email.
//! upgrader!(Contact, 1, |item| {
//!     item.rename("name", "full_name");
//!     item.set("email", None::<String>);
//!     Ok(())
//! });
//! ```
//!
//! The upgraded items are written to a new table, which replaces the old
//! one in a single transaction at the end, so a store is never half
//! upgraded. Small tables upgrade when the store opens. Larger ones upgrade
//! in the background, a batch at a time between the store's other work; any
//! read or write of that type meanwhile finishes the upgrade first, so no
//! item of an old version ever reaches code written for the new one.

use std::collections::BTreeMap;

use crate::backend::{Conn, Engine};
use crate::error::{Result, StoreError};
use crate::item::{ItemType, table_name};
use crate::sql::{self, ident};
use crate::store::{Shared, Writer};
use crate::value::{Attribute, Value};

/// Items upgraded per transaction in the background.
const BATCH: i64 = 2_000;

/// An upgrader: turns an item of one version into the next.
pub type UpgradeFn = fn(&mut Upgrading) -> Result<()>;

/// Submitted by [`upgrader!`](crate::upgrader); not for hand use.
#[doc(hidden)]
pub struct UpgraderRegistration {
    pub item: &'static str,
    pub from: u32,
    pub upgrade: UpgradeFn,
}

inventory::collect!(UpgraderRegistration);

/// Registers an upgrader for item type `$item` from version `$from` to
/// `$from + 1`. The closure gets a [`Upgrading`] and returns
/// `Result<(), StoreError>`.
#[macro_export]
macro_rules! upgrader {
    ($item:ty, $from:expr, $f:expr) => {
        $crate::__private::inventory::submit! {
            $crate::UpgraderRegistration {
                item: <$item as $crate::Item>::NAME,
                from: $from,
                upgrade: $f,
            }
        }
    };
}

/// An item being upgraded: its attributes by name, as stored.
#[derive(Debug)]
pub struct Upgrading {
    id: i64,
    version: u32,
    values: BTreeMap<String, Value<'static>>,
    store: std::path::PathBuf,
}

impl Upgrading {
    /// The item's id (it keeps it).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The version the item is at, before this upgrader.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The store the item is in, as its errors name it: its file on
    /// SQLite (`<site>/site.sqlite` for the site store), `postgresql:<key>`
    /// on PostgreSQL. For an upgrader that needs something kept beside the
    /// store, such as a key that must not be in it.
    pub fn store_path(&self) -> &std::path::Path {
        &self.store
    }

    /// Whether the item has this attribute.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// An attribute, as type `A`.
    pub fn get<A: Attribute>(&self, name: &str) -> Result<A> {
        let v = self.values.get(name).cloned().unwrap_or(Value::Null);
        Ok(A::from_value(v).map_err(|e| {
            crate::value::ValueError::new(format!("attribute {name:?}: {}", e.problem))
        })?)
    }

    /// Sets (or adds) an attribute.
    pub fn set<A: Attribute>(&mut self, name: &str, value: A) {
        self.values
            .insert(name.to_string(), value.to_value().into_owned());
    }

    /// Removes an attribute, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value<'static>> {
        self.values.remove(name)
    }

    /// Renames an attribute.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(v) = self.values.remove(from) {
            self.values.insert(to.to_string(), v);
        }
    }

    /// Changes an attribute's type with `f`.
    pub fn retype<A: Attribute, B: Attribute>(
        &mut self,
        name: &str,
        f: impl FnOnce(A) -> B,
    ) -> Result<()> {
        let old: A = self.get(name)?;
        self.set(name, f(old));
        Ok(())
    }
}

/// How far an upgrade has come.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The item type.
    pub item: String,
    /// Items upgraded so far.
    pub done: u64,
    /// Items to upgrade.
    pub total: u64,
    /// Why the background upgrade stopped, if it failed.
    pub failed: Option<String>,
}

pub(crate) fn check_chain(shared: &Shared, t: &ItemType, stored: u32) -> Result<()> {
    for v in stored..t.version {
        if shared.registry.upgrader(t.name, v).is_none() {
            return Err(StoreError::MissingUpgrader {
                path: shared.path.clone(),
                item: t.name.to_string(),
                stored,
                missing: v,
            });
        }
    }
    Ok(())
}

fn new_table(t: &ItemType) -> String {
    format!("{}__upgrading", t.table())
}

fn int(v: Option<Value<'static>>) -> i64 {
    match v {
        Some(Value::Integer(i)) => i,
        _ => 0,
    }
}

/// Starts (or finds, after a restart) the upgrade of `t` from `from`.
/// Runs inside the caller's write transaction.
pub(crate) fn start(conn: &Conn, t: &ItemType, from: u32) -> Result<Progress> {
    crate::schema::Internal::Upgrades.ensure(conn)?;
    let existing = conn.rows(
        "SELECT done, total FROM _upgrades WHERE name = ?",
        &[Value::Text(t.name.into())],
    )?;
    if let Some(row) = existing.into_iter().next() {
        let mut it = row.into_iter();
        return Ok(Progress {
            item: t.name.to_string(),
            done: int(it.next()) as u64,
            total: int(it.next()) as u64,
            failed: None,
        });
    }
    let old = ident(&t.table());
    let total = int(conn.scalar(&format!("SELECT COUNT(*) FROM {old}"), &[])?);
    conn.batch(&format!("DROP TABLE IF EXISTS {}", ident(&new_table(t))))?;
    conn.batch(&conn.engine().create_table(t, &new_table(t)))?;
    // Cascades from other types can still reach the old table while the
    // upgrade runs: a deleted item leaves the new table, a changed one is
    // upgraded again.
    conn.batch(&crate::backend::upgrade_triggers(conn, t, &new_table(t))?)?;
    conn.execute(
        "INSERT INTO _upgrades (name, from_version, last_id, done, total) VALUES (?, ?, 0, 0, ?)",
        &[
            Value::Text(t.name.into()),
            Value::Integer(from.into()),
            Value::Integer(total),
        ],
    )?;
    Ok(Progress {
        item: t.name.to_string(),
        done: 0,
        total: total as u64,
        failed: None,
    })
}

fn default_value(literal: &str) -> Value<'static> {
    if let Some(s) = literal
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
    {
        return Value::Text(s.replace("''", "'").into());
    }
    if let Ok(i) = literal.parse::<i64>() {
        return Value::Integer(i);
    }
    literal
        .parse::<f64>()
        .map(Value::Real)
        .unwrap_or(Value::Null)
}

/// Upgrades one batch; returns whether none are left.
fn batch(conn: &Conn, shared: &Shared, t: &ItemType) -> Result<bool> {
    let row = conn
        .rows(
            "SELECT from_version, last_id FROM _upgrades WHERE name = ?",
            &[Value::Text(t.name.into())],
        )?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Database {
            path: shared.path.clone(),
            reason: format!("no upgrade of {} is in progress", t.name),
        })?;
    let mut it = row.into_iter();
    let from = int(it.next()) as u32;
    let last_id = int(it.next());

    let old = ident(&t.table());
    let (columns, select) = stored_columns(conn, &t.table())?;
    let mut rows = conn.rows(
        &format!("SELECT {select} FROM {old} WHERE id > ? ORDER BY id LIMIT {BATCH}"),
        &[Value::Integer(last_id)],
    )?;
    let fresh = rows.len() as i64;
    let redo = conn.rows(
        &format!(
            "SELECT {select} FROM {old} WHERE id IN (SELECT id FROM _upgrade_redo WHERE name = ?)"
        ),
        &[Value::Text(t.name.into())],
    )?;
    let redone = !redo.is_empty();
    rows.extend(redo);

    // An item upgraded again (changed meanwhile) replaces its first copy.
    let insert = sql::upsert_by_id(t, &new_table(t));
    let mut max_id = last_id;
    for row in rows {
        let new_values = upgraded_row(shared.registry, &shared.path, t, from, &columns, row)?;
        let id = int(new_values.first().cloned());
        conn.execute(&insert, &new_values)?;
        max_id = max_id.max(id);
    }
    conn.execute(
        "UPDATE _upgrades SET last_id = ?, done = MIN(total, done + ?) WHERE name = ?",
        &[
            Value::Integer(max_id),
            Value::Integer(fresh),
            Value::Text(t.name.into()),
        ],
    )?;
    if redone {
        conn.execute(
            "DELETE FROM _upgrade_redo WHERE name = ?",
            &[Value::Text(t.name.into())],
        )?;
    }
    Ok(fresh < BATCH)
}

/// The reference triggers that mention `t`'s table: its own, and those of
/// types that refer to it.
fn triggers_around(engine: Engine, shared: &Shared, t: &ItemType) -> Vec<crate::backend::Trigger> {
    let table = t.table();
    shared
        .registry
        .types()
        .iter()
        .flat_map(|c| {
            let own = c.name == t.name;
            engine
                .ref_triggers(c)
                .into_iter()
                .filter(|trig| own || trig.on_table == table)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Upgrades what is left and puts the new table in place of the old one.
/// Runs inside the caller's write transaction.
pub(crate) fn complete(conn: &Conn, shared: &Shared, t: &ItemType) -> Result<()> {
    while !batch(conn, shared, t)? {}
    // Changes made by cascades while the last batch ran.
    batch(conn, shared, t)?;
    let table = t.table();
    let around = triggers_around(conn.engine(), shared, t);
    for trig in &around {
        conn.batch(&conn.engine().drop_trigger(trig))?;
    }
    crate::backend::replace_table(conn, &table, &new_table(t))?;
    conn.batch(&conn.engine().create_indexes(t))?;
    for trig in &around {
        conn.batch(&trig.sql)?;
    }
    for a in t.attrs {
        let Some(target) = a.references else { continue };
        let dangling = int(conn.scalar(
            &format!(
                "SELECT COUNT(*) FROM {} WHERE {c} IS NOT NULL AND {c} NOT IN (SELECT id FROM {})",
                ident(&table),
                ident(&table_name(target)),
                c = ident(a.name)
            ),
            &[],
        )?);
        if dangling > 0 {
            return Err(StoreError::UpgradeFailed {
                item: t.name.to_string(),
                id: 0,
                from: t.version - 1,
                reason: format!(
                    "{dangling} upgraded item(s) have a {} reference to a {target} that does not exist",
                    a.name
                ),
            });
        }
    }
    let (i, _) = shared
        .registry
        .position(t.name)
        .ok_or_else(|| StoreError::UnknownType(t.name.to_string()))?;
    conn.execute(
        "UPDATE _types SET version = ?, shape = ? WHERE name = ?",
        &[
            Value::Integer(t.version.into()),
            Value::Text(shared.registry.create_sql(i).into()),
            Value::Text(t.name.into()),
        ],
    )?;
    conn.execute(
        "DELETE FROM _upgrades WHERE name = ?",
        &[Value::Text(t.name.into())],
    )?;
    tracing::info!(store = %conn.path().display(), item = t.name, version = t.version, "upgrade finished");
    Ok(())
}

fn item_type<'r>(shared: &'r Shared, name: &str) -> Result<&'r ItemType> {
    shared
        .registry
        .find(name)
        .ok_or_else(|| StoreError::UnknownType(name.to_string()))
}

fn forget(shared: &Shared, name: &str) {
    let mut map = shared.upgrading.lock().unwrap_or_else(|e| e.into_inner());
    map.remove(name);
    note_if_none_left(shared, &map);
}

/// Lets queries skip the lock once no upgrade is left (none are added after
/// the store opens).
fn note_if_none_left(shared: &Shared, map: &std::collections::HashMap<String, Progress>) {
    if map.is_empty() {
        shared
            .any_upgrading
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Finishes the upgrade of `name` now; by the holder of the write lock, inside a write
/// transaction or not. Inside one, the upgrade is done only if that
/// transaction commits: until then it stays pending for every other
/// transaction ([`write_ended`] forgets it then), and if it rolls back, the
/// upgrade is still to do.
pub(crate) fn finish(conn: &Conn, shared: &Shared, name: &str) -> Result<()> {
    if !shared.upgrade_pending(name) {
        return Ok(());
    }
    let t = item_type(shared, name)?;
    if conn.in_transaction() {
        let mut w = in_write(shared);
        if !w.upgraded.iter().any(|n| n == name) {
            complete(conn, shared, t)?;
            w.upgraded.push(name.to_string());
        }
        return Ok(());
    }
    conn.begin_write()?;
    if let Err(e) = complete(conn, shared, t) {
        conn.rollback();
        return Err(e);
    }
    conn.commit()?;
    forget(shared, name);
    Ok(())
}

/// What the open write transaction has done to the schema: upgrades
/// finished and tables created, which count for everyone else only once
/// it commits.
#[derive(Default)]
pub(crate) struct InWrite {
    /// Item types whose upgrade it finished.
    upgraded: Vec<String>,
    /// Item types (registry indexes) whose table it created.
    pub(crate) created: Vec<usize>,
}

/// Where a savepoint began, to undo what came after it.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    upgraded: usize,
    created: usize,
}

pub(crate) fn in_write(shared: &Shared) -> std::sync::MutexGuard<'_, InWrite> {
    shared.in_write.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer's transaction has ended: the upgrades it finished are done,
/// and the tables it created are there, if it committed; if not, they are
/// still to do.
pub(crate) fn write_ended(shared: &Shared, committed: bool) {
    let done = std::mem::take(&mut *in_write(shared));
    if committed {
        for name in done.upgraded {
            forget(shared, &name);
        }
        for i in done.created {
            shared.tables.created(i);
        }
    }
}

/// How much the writer's open transaction has done so far; a savepoint
/// notes it, to give back to [`rolled_back_to`].
pub(crate) fn mark(shared: &Shared) -> Mark {
    let w = in_write(shared);
    Mark {
        upgraded: w.upgraded.len(),
        created: w.created.len(),
    }
}

/// A savepoint was rolled back: what was done inside it is still to do.
pub(crate) fn rolled_back_to(shared: &Shared, mark: Mark) {
    let mut w = in_write(shared);
    w.upgraded.truncate(mark.upgraded);
    w.created.truncate(mark.created);
}

pub(crate) fn has_background_work(shared: &Shared) -> bool {
    let map = shared.upgrading.lock().unwrap_or_else(|e| e.into_inner());
    map.values().any(|p| p.failed.is_none())
}

/// One background batch of the first unfinished upgrade; commits.
fn step_once(w: &mut Writer) -> Result<Option<Progress>> {
    let name = {
        let map = w.shared.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        match map.values().find(|p| p.failed.is_none()) {
            Some(p) => p.item.clone(),
            None => return Ok(None),
        }
    };
    let t = item_type(&w.shared, &name)?;
    w.conn().begin_write()?;
    let result = batch(w.conn(), &w.shared, t).and_then(|last| {
        if last {
            complete(w.conn(), &w.shared, t)?;
        }
        Ok(last)
    });
    match result {
        Ok(last) => {
            w.conn().commit()?;
            let mut map = w.shared.upgrading.lock().unwrap_or_else(|e| e.into_inner());
            if last {
                let removed = map.remove(&name);
                note_if_none_left(&w.shared, &map);
                let mut p = removed.unwrap_or(Progress {
                    item: name,
                    done: 0,
                    total: 0,
                    failed: None,
                });
                p.done = p.total;
                Ok(Some(p))
            } else {
                let p = map.get_mut(&name).expect("upgrade in progress");
                p.done = (p.done + BATCH as u64).min(p.total);
                Ok(Some(p.clone()))
            }
        }
        Err(e) => {
            w.conn().rollback();
            let mut map = w.shared.upgrading.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = map.get_mut(&name) {
                p.failed = Some(e.to_string());
            }
            Err(e)
        }
    }
}

/// One background step, errors logged (and kept in the progress, so that
/// reads of the type report them).
pub(crate) fn step(w: &mut Writer) {
    if let Err(e) = step_once(w) {
        tracing::error!(store = %w.shared.path.display(), error = %e, "background upgrade failed");
    }
}

/// Runs every background upgrade to the end.
pub(crate) fn finish_all(w: &mut Writer, mut progress: impl FnMut(&Progress)) -> Result<()> {
    {
        // Failed ones get another try when asked explicitly.
        let mut map = w.shared.upgrading.lock().unwrap_or_else(|e| e.into_inner());
        for p in map.values_mut() {
            p.failed = None;
        }
    }
    while let Some(p) = step_once(w)? {
        progress(&p);
    }
    Ok(())
}

/// The columns of `table` as it is stored (an older version's), and the
/// list that selects its rows as [`upgraded_row`] takes them: `id` first.
pub(crate) fn stored_columns(conn: &Conn, table: &str) -> Result<(Vec<String>, String)> {
    let columns: Vec<String> = crate::backend::table_columns(conn, table)?
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    let mut select = String::from("id");
    for c in &columns {
        select.push_str(", ");
        select.push_str(&ident(c));
    }
    Ok((columns, select))
}

/// Row `row` of `t`'s table at version `from` (its id, then `columns`),
/// brought to `t`'s version by its chain of upgraders: the new row, id
/// first, then `t`'s attributes in order.
pub(crate) fn upgraded_row(
    registry: &crate::item::Registry,
    path: &std::path::Path,
    t: &ItemType,
    from: u32,
    columns: &[String],
    row: Vec<Value<'static>>,
) -> Result<Vec<Value<'static>>> {
    let mut values = row.into_iter();
    let id = int(values.next());
    let mut item = Upgrading {
        id,
        version: from,
        values: columns.iter().cloned().zip(values).collect(),
        store: path.to_path_buf(),
    };
    for v in from..t.version {
        let f = registry
            .upgrader(t.name, v)
            .ok_or_else(|| StoreError::MissingUpgrader {
                path: path.to_path_buf(),
                item: t.name.to_string(),
                stored: from,
                missing: v,
            })?;
        item.version = v;
        crate::store::caught(|| f(&mut item)).map_err(|e| StoreError::UpgradeFailed {
            item: t.name.to_string(),
            id,
            from: v,
            reason: e.to_string(),
        })?;
    }
    let mut new_values = vec![Value::Integer(id)];
    for a in t.attrs {
        let v = match item.values.remove(a.name) {
            Some(v) => v,
            None => match a.default {
                Some(d) => default_value(d),
                None if a.nullable => Value::Null,
                None => {
                    return Err(StoreError::UpgradeFailed {
                        item: t.name.to_string(),
                        id,
                        from: t.version - 1,
                        reason: format!(
                            "the upgrade leaves attribute {:?} without a value; set it in an upgrader or give it a default",
                            a.name
                        ),
                    });
                }
            },
        };
        new_values.push(v);
    }
    (t.validate)(new_values[1..].to_vec()).map_err(|e| StoreError::UpgradeFailed {
        item: t.name.to_string(),
        id,
        from: t.version - 1,
        reason: e.to_string(),
    })?;
    Ok(new_values)
}
