//! Files attached to items, stored beside the store.
//!
//! Large blobs (mail bodies, uploads, voicemail audio) do not belong in the
//! database file, where every backup and vacuum would copy them. Each
//! attachment is written to a new file of its own under
//! `<store>.files/`, synced, and only then recorded in the transaction; a
//! replaced or removed file is put on a trash list in the same transaction
//! and unlinked after it commits. So a committed record always points to a
//! complete file, and a rolled-back one leaves at worst an unreferenced file
//! behind, never a missing one.
//!
//! On PostgreSQL the nodes of a site share no disk: a file is kept in its
//! `_files` row (`data`), and the file beside the store that
//! [`Read::file_path`](crate::Read::file_path) hands out is a copy made
//! on first use, under the same never-reused name, removed with the rest
//! of the trash when the file is replaced or its item deleted.

use std::io::Write as _;
use std::path::Path;

use crate::backend::Conn;
use crate::error::{Result, StoreError};
use crate::item::Item;
use crate::store::Shared;
use crate::tx::Write;
use crate::value::{Ref, Value};

fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(StoreError::BadFileName { name: name.into() });
    }
    Ok(())
}

impl Write<'_> {
    /// Attaches `bytes` to an item as the file `name`, replacing a file of
    /// that name. The file is removed when the item is deleted.
    pub fn attach_file<T: Item>(&mut self, item: Ref<T>, name: &str, bytes: &[u8]) -> Result<()> {
        check_name(name)?;
        self.get(item)?;
        // Named for its item and the moment, never for other contents.
        let rel = format!(
            "{}/{}/{}-{}",
            T::NAME,
            item.id(),
            crate::Timestamp::now().as_micros(),
            name
        );
        // What it replaces goes to the trash (on PostgreSQL, a copy of it
        // this node may have made).
        self.touched_files = true;
        let on_disk = self.conn().engine() == crate::backend::Engine::Sqlite;
        if on_disk {
            let path = self.shared().files_dir.join(&rel);
            let dir = path.parent().expect("file path has a parent");
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            let tmp = path.with_extension("partial");
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| StoreError::io(&path, e))?;
        }
        let key = [
            Value::Text(T::NAME.into()),
            Value::Integer(item.id()),
            Value::Text(name.into()),
        ];
        self.conn().execute(
            "INSERT INTO _files_trash (path) SELECT path FROM _files WHERE item_type = ? AND item_id = ? AND name = ?",
            &key,
        )?;
        let mut row = key.to_vec();
        row.push(Value::Text(rel.into()));
        row.push(Value::Integer(bytes.len() as i64));
        if on_disk {
            self.conn().execute(
                "INSERT INTO _files (item_type, item_id, name, path, size) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (item_type, item_id, name) DO UPDATE SET path = excluded.path, size = excluded.size",
                &row,
            )?;
        } else {
            // On PostgreSQL the file itself is in its row.
            row.push(Value::Blob(bytes.into()));
            self.conn().execute(
                "INSERT INTO _files (item_type, item_id, name, path, size, data) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (item_type, item_id, name) DO UPDATE SET path = excluded.path, size = excluded.size,
                        data = excluded.data",
                &row,
            )?;
        }
        Ok(())
    }

    /// Removes a file attached to an item; returns whether there was one.
    pub fn remove_file<T: Item>(&mut self, item: Ref<T>, name: &str) -> Result<bool> {
        self.touched_files = true;
        let key = [
            Value::Text(T::NAME.into()),
            Value::Integer(item.id()),
            Value::Text(name.into()),
        ];
        self.conn().execute(
            "INSERT INTO _files_trash (path) SELECT path FROM _files WHERE item_type = ? AND item_id = ? AND name = ?",
            &key,
        )?;
        Ok(self.conn().execute(
            "DELETE FROM _files WHERE item_type = ? AND item_id = ? AND name = ?",
            &key,
        )? > 0)
    }
}

/// Unlinks the files on the trash list (after a commit that put files on
/// it; what a crash left there goes with the next such commit).
pub(crate) fn empty_trash(conn: &Conn, shared: &Shared) {
    // A transaction of its own: on PostgreSQL, only one that names the
    // store sees its rows.
    if conn.begin_write().is_err() {
        return;
    }
    let rows = match conn.rows("SELECT DISTINCT path FROM _files_trash LIMIT 1000", &[]) {
        Ok(rows) if !rows.is_empty() => rows,
        _ => return conn.rollback(),
    };
    for row in rows {
        let Some(Value::Text(rel)) = row.into_iter().next() else {
            continue;
        };
        let path = shared.files_dir.join(rel.as_ref());
        match std::fs::remove_file(&path) {
            Ok(()) => remove_empty_parents(&path, &shared.files_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "could not remove an item's file");
                continue;
            }
        }
        let _ = conn.execute(
            "DELETE FROM _files_trash WHERE path = ?",
            &[Value::Text(rel)],
        );
    }
    if conn.commit().is_err() {
        conn.rollback();
    }
}

fn remove_empty_parents(path: &Path, root: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}
