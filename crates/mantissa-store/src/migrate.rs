//! Moving a whole site from one engine to the other: every store, row by
//! row, with its attached files, keeping every id and each store's
//! identity, and checking at the end that the copy holds what the
//! original did.
//!
//! Each store is copied in one write transaction of the target: a copy
//! interrupted anywhere leaves each store either whole in the target or
//! not there at all (an empty store at most), so running it again resumes
//! where it stopped: a store whose identity is in the target already is
//! checked and not copied again. A target that holds anything else is
//! refused unless the caller says to replace what is there.
//!
//! Rows go through the backends' own statements (the same `Value`s in and
//! out) rather than an engine's dump tool: a dump of one engine is no
//! input for the other, and the target's triggers, defaults and
//! row-level security then hold for the copy as for any write.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::backend::{Conn, Engine};
use crate::error::{Result, StoreError};
use crate::schema::{Internal, int, text};
use crate::site::Site;
use crate::sql::ident;
use crate::store::Store;
use crate::value::Value;

/// The store's own tables a copy carries, each with its columns, the group
/// that makes it, and whether its ids come from a sequence the target
/// must be brought past them.
const INTERNAL: &[(&str, &[&str], Internal, bool)] = &[
    (
        "_powerups",
        &[
            "id",
            "interface",
            "target_type",
            "target_id",
            "provider_type",
            "provider_id",
            "priority",
        ],
        Internal::ItemSupport,
        true,
    ),
    (
        "_schedule",
        &[
            "id",
            "item_type",
            "item_id",
            "due",
            "attempts",
            "last_error",
        ],
        Internal::ItemSupport,
        true,
    ),
    (
        "_cursors",
        &["listener", "last_id", "attempts", "last_error", "retry_at"],
        Internal::Cursors,
        false,
    ),
    (
        "_outbox",
        &[
            "id",
            "target",
            "kind",
            "body",
            "state",
            "answer",
            "attempts",
            "next_try",
            "last_error",
        ],
        Internal::Outbox,
        true,
    ),
    (
        "_inbox",
        &["sender_id", "message_id", "answer"],
        Internal::Inbox,
        false,
    ),
    ("_due_stores", &["store", "due"], Internal::DueStores, false),
];

/// One table of a store as read for a copy.
struct Table {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<Value<'static>>>,
    /// The item type it holds (index in the registry), or the group of
    /// the store's own tables that makes it.
    made_by: MadeBy,
    sequence: bool,
}

enum MadeBy {
    Item(usize),
    Internal(Internal),
}

/// Everything a store holds, read in one snapshot.
struct Snapshot {
    identity: String,
    created: Option<Value<'static>>,
    legacy_outbox: i64,
    tables: Vec<Table>,
    /// Attached files: item type, item id, name, path, and the bytes.
    files: Vec<(String, i64, String, String, Vec<u8>)>,
}

/// What a copy of a site did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Stores copied now.
    pub copied: usize,
    /// Stores found whole in the target already (an earlier, interrupted
    /// run copied them), checked and left.
    pub already_there: usize,
    /// Rows copied, over every table of every store copied now.
    pub rows: u64,
    /// Attached files copied.
    pub files: u64,
}

impl Site {
    /// Copies every store of this site, with its attached files, into
    /// `target` (a site on the other engine, or the same), store by store,
    /// and checks each copy against the original (the rows of every table,
    /// counted and hashed, and the files). `progress(done, total, store)`
    /// is called after each store. Resumes an interrupted copy: stores
    /// already whole in the target are checked and left. A target whose
    /// stores hold anything but an earlier copy of these is refused,
    /// unless `replace`, which replaces the stores of the same names.
    ///
    /// Run it while neither site is served: writes made to this site
    /// during the copy may be missing from it. Blocking.
    pub fn copy_to(
        &self,
        target: &Site,
        replace: bool,
        mut progress: impl FnMut(usize, usize, &str),
    ) -> Result<CopyReport> {
        crate::blocking::refuse_in_async("Site::copy_to", "tokio::task::spawn_blocking")?;
        let names = self.user_names()?;
        let total = names.len() + 1;
        let mut report = CopyReport::default();
        copy_store(self.store(), target.store(), replace, &mut report)?;
        progress(1, total, "site");
        for (i, name) in names.iter().enumerate() {
            let from = self.user_store(name)?;
            let to = target.user_store(name)?;
            copy_store(&from, &to, replace, &mut report)?;
            // The copy's identity is read when a store opens.
            drop(to);
            target.close_user_store(name)?;
            progress(i + 2, total, name);
        }
        Ok(report)
    }
}

/// Copies `from` into `to`, or checks an earlier copy.
pub(crate) fn copy_store(
    from: &Store,
    to: &Store,
    replace: bool,
    report: &mut CopyReport,
) -> Result<()> {
    if !from.upgrades_in_progress().is_empty() {
        return Err(StoreError::Database {
            path: from.path().to_path_buf(),
            reason: "an item type is being upgraded: finish it first (`mantissa store upgrade`)"
                .into(),
        });
    }
    let snapshot = from.read_blocking(|r| read_store(r.conn, r.shared))?;
    let (there, holds) = to.read_blocking(|r| -> Result<_> {
        let id = text(
            r.conn
                .scalar("SELECT value FROM _meta WHERE key = 'id'", &[])?,
        );
        Ok((id, holds_anything(r.conn, r.shared)?))
    })?;
    let earlier = there.as_deref() == Some(snapshot.identity.as_str());
    if earlier && !replace {
        report.already_there += 1;
    } else {
        if holds && !replace {
            return Err(StoreError::TargetNotEmpty {
                store: to.name().to_string(),
            });
        }
        let files_dir = to.files_dir().to_path_buf();
        to.write_blocking(|tx| -> Result<()> {
            if holds {
                clear_store(tx.conn, tx.shared())?;
            }
            write_store(tx.conn, tx.shared(), &snapshot, &files_dir, report)
        })?;
        report.copied += 1;
    }
    // The copy holds what the original does, whichever run made it.
    let copy = to.read_blocking(|r| read_store(r.conn, r.shared))?;
    let (want, got) = (digest(&snapshot), digest(&copy));
    if want != got {
        let mut differ: Vec<&str> = want
            .iter()
            .filter(|(name, d)| got.get(*name) != Some(d))
            .chain(got.iter().filter(|(name, _)| !want.contains_key(*name)))
            .map(|(name, _)| name.as_str())
            .collect();
        differ.dedup();
        return Err(StoreError::Database {
            path: to.path().to_path_buf(),
            reason: format!(
                "the copy of store {:?} differs from the original in {}{}",
                from.name(),
                differ.join(", "),
                if earlier {
                    " (an earlier run copied it, and one of the two has changed since: copy again, replacing what is there)"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}

/// Empties a store of the target that is to be replaced: items (those
/// that refer to others first, so that no reference refuses), then the
/// store's own tables. Its identity stays until the copy's replaces it.
fn clear_store(conn: &Conn, shared: &crate::store::Shared) -> Result<()> {
    for i in reference_order(shared.registry).into_iter().rev() {
        if crate::schema::has_table_at(conn, shared, i, true)? {
            let t = &shared.registry.types()[i];
            conn.execute(&format!("DELETE FROM {}", ident(&t.table())), &[])?;
        }
    }
    for (table, ..) in INTERNAL {
        conn.execute(&format!("DELETE FROM {table}"), &[])?;
    }
    conn.execute("DELETE FROM _files", &[])?;
    conn.execute("DELETE FROM _meta WHERE key = 'legacy_outbox'", &[])?;
    Ok(())
}

/// Whether a store holds any item, or any row of its own tables.
fn holds_anything(conn: &Conn, shared: &crate::store::Shared) -> Result<bool> {
    for (i, t) in shared.registry.types().iter().enumerate() {
        if crate::schema::has_table_at(conn, shared, i, false)?
            && conn
                .scalar(&format!("SELECT 1 FROM {} LIMIT 1", ident(&t.table())), &[])?
                .is_some()
        {
            return Ok(true);
        }
    }
    for (table, ..) in INTERNAL {
        if conn
            .scalar(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_store(conn: &Conn, shared: &crate::store::Shared) -> Result<Snapshot> {
    let mut meta = std::collections::HashMap::new();
    for row in conn.rows("SELECT key, value FROM _meta", &[])? {
        let mut it = row.into_iter();
        if let (Some(k), Some(v)) = (text(it.next()), it.next()) {
            meta.insert(k, v);
        }
    }
    let identity = text(meta.remove("id")).ok_or_else(|| StoreError::NotAStore {
        path: shared.path.clone(),
        reason: "its _meta table has no id".into(),
    })?;
    let mut tables = Vec::new();
    // Item types in the order their references need: a type after those
    // it refers to.
    for i in reference_order(shared.registry) {
        let t = &shared.registry.types()[i];
        if !crate::schema::has_table_at(conn, shared, i, false)? {
            continue;
        }
        let mut columns = vec!["id".to_string()];
        columns.extend(t.attrs.iter().map(|a| a.name.to_string()));
        tables.push(read_table(
            conn,
            &t.table(),
            columns,
            MadeBy::Item(i),
            true,
        )?);
    }
    for &(name, columns, group, sequence) in INTERNAL {
        let columns = columns.iter().map(|c| c.to_string()).collect();
        tables.push(read_table(
            conn,
            name,
            columns,
            MadeBy::Internal(group),
            sequence,
        )?);
    }
    let mut files = Vec::new();
    let with_data = conn.engine() == Engine::Postgres;
    let sql = if with_data {
        "SELECT item_type, item_id, name, path, data FROM _files ORDER BY item_type, item_id, name"
    } else {
        "SELECT item_type, item_id, name, path FROM _files ORDER BY item_type, item_id, name"
    };
    for row in conn.rows(sql, &[])? {
        let mut it = row.into_iter();
        let (ty, id, name, path) = (
            text(it.next()).unwrap_or_default(),
            int(it.next()).unwrap_or_default(),
            text(it.next()).unwrap_or_default(),
            text(it.next()).unwrap_or_default(),
        );
        let data = match it.next() {
            Some(Value::Blob(b)) => b.into_owned(),
            _ => {
                let on_disk = shared.files_dir.join(&path);
                std::fs::read(&on_disk).map_err(|e| StoreError::io(&on_disk, e))?
            }
        };
        files.push((ty, id, name, path, data));
    }
    Ok(Snapshot {
        identity,
        created: meta.remove("created"),
        legacy_outbox: int(meta.remove("legacy_outbox")).unwrap_or(0),
        tables,
        files,
    })
}

fn read_table(
    conn: &Conn,
    name: &str,
    columns: Vec<String>,
    made_by: MadeBy,
    sequence: bool,
) -> Result<Table> {
    let list: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let rows = conn.rows(
        &format!(
            "SELECT {} FROM {} ORDER BY {}",
            list.join(", "),
            ident(name),
            list.join(", ")
        ),
        &[],
    )?;
    Ok(Table {
        name: name.to_string(),
        columns,
        rows,
        made_by,
        sequence,
    })
}

/// The registry's types, each after the types it refers to (a cycle is
/// broken where it closes: its rows go in id order, and a reference to a
/// later one is refused by the target, naming it).
fn reference_order(registry: &crate::item::Registry) -> Vec<usize> {
    let types = registry.types();
    let mut order = Vec::new();
    let mut state = vec![0u8; types.len()];
    fn visit(
        i: usize,
        types: &[crate::item::ItemType],
        registry: &crate::item::Registry,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) {
        if state[i] != 0 {
            return;
        }
        state[i] = 1;
        for a in types[i].attrs {
            if let Some((j, _)) = a.references.and_then(|r| registry.position(r)) {
                visit(j, types, registry, state, order);
            }
        }
        state[i] = 2;
        order.push(i);
    }
    for i in 0..types.len() {
        visit(i, types, registry, &mut state, &mut order);
    }
    order
}

fn write_store(
    conn: &Conn,
    shared: &crate::store::Shared,
    snapshot: &Snapshot,
    files_dir: &std::path::Path,
    report: &mut CopyReport,
) -> Result<()> {
    for table in &snapshot.tables {
        if table.rows.is_empty() {
            continue;
        }
        match table.made_by {
            MadeBy::Item(i) => {
                crate::schema::create(conn, shared, shared.registry.types()[i].name)?
            }
            MadeBy::Internal(group) => group.ensure(conn)?,
        }
        let list: Vec<String> = table.columns.iter().map(|c| ident(c)).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            ident(&table.name),
            list.join(", "),
            vec!["?"; list.len()].join(", ")
        );
        for row in &table.rows {
            conn.execute(&sql, row)?;
        }
        report.rows += table.rows.len() as u64;
        if table.sequence {
            crate::backend::ids_past_copied(conn, &table.name)?;
        }
    }
    if !snapshot.files.is_empty() {
        Internal::ItemSupport.ensure(conn)?;
    }
    for (ty, id, name, path, data) in &snapshot.files {
        let mut params = vec![
            Value::Text(ty.clone().into()),
            Value::Integer(*id),
            Value::Text(name.clone().into()),
            Value::Text(path.clone().into()),
            Value::Integer(data.len() as i64),
        ];
        if conn.engine() == Engine::Postgres {
            params.push(Value::Blob(data.clone().into()));
            conn.execute(
                "INSERT INTO _files (item_type, item_id, name, path, size, data) VALUES (?, ?, ?, ?, ?, ?)",
                &params,
            )?;
        } else {
            let on_disk = files_dir.join(path);
            let dir = on_disk.parent().expect("file path has a parent");
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            std::fs::write(&on_disk, data)
                .and_then(|()| std::fs::File::open(&on_disk)?.sync_all())
                .map_err(|e| StoreError::io(&on_disk, e))?;
            conn.execute(
                "INSERT INTO _files (item_type, item_id, name, path, size) VALUES (?, ?, ?, ?, ?)",
                &params,
            )?;
        }
        report.files += 1;
    }
    // The copy is the same store: the same identity, as a sender of
    // messages above all.
    conn.execute(
        "UPDATE _meta SET value = ? WHERE key = 'id'",
        &[Value::Text(snapshot.identity.clone().into())],
    )?;
    if let Some(created) = &snapshot.created {
        conn.execute(
            "UPDATE _meta SET value = ? WHERE key = 'created'",
            std::slice::from_ref(created),
        )?;
    }
    if snapshot.legacy_outbox > 0 {
        conn.execute(
            "INSERT INTO _meta (key, value) VALUES ('legacy_outbox', ?)",
            &[Value::Integer(snapshot.legacy_outbox)],
        )?;
    }
    Ok(())
}

/// Each table's name, row count and a hash of its rows (in key order), and
/// the files' names, sizes and a hash of their bytes: equal for a store
/// and its copy, whichever engines hold them.
fn digest(s: &Snapshot) -> std::collections::BTreeMap<String, (usize, u64)> {
    let mut out: Vec<(String, usize, u64)> = s
        .tables
        .iter()
        .map(|t| {
            let mut h = DefaultHasher::new();
            for row in &t.rows {
                for v in row {
                    hash_value(v, &mut h);
                }
            }
            (t.name.clone(), t.rows.len(), h.finish())
        })
        // A table the other side never made is an empty one.
        .filter(|(_, n, _)| *n > 0)
        .collect();
    let mut h = DefaultHasher::new();
    for (ty, id, name, path, data) in &s.files {
        (ty, id, name, path, data).hash(&mut h);
    }
    out.push(("attached files".into(), s.files.len(), h.finish()));
    out.push(("identity".into(), 0, {
        let mut h = DefaultHasher::new();
        s.identity.hash(&mut h);
        h.finish()
    }));
    out.into_iter().map(|(name, n, h)| (name, (n, h))).collect()
}

fn hash_value(v: &Value<'_>, h: &mut DefaultHasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Integer(i) => (1u8, i).hash(h),
        Value::Real(f) => (2u8, f.to_bits()).hash(h),
        Value::Text(t) => (3u8, t.as_ref()).hash(h),
        Value::Blob(b) => (4u8, b.as_ref()).hash(h),
    }
}
