//! Operating on stores as files: statistics, online backup, and exporting
//! or importing one user's store as a single file.
//!
//! Backups use `VACUUM INTO` from a connection of their own: it copies a
//! consistent snapshot of a live store without holding up its writer (WAL
//! readers do not block writers), and writes a compact file. Attached files
//! are immutable once written (each version gets a new name), so copying the
//! ones a snapshot refers to, after the snapshot, is consistent too.

use std::path::{Path, PathBuf};

use crate::backend::Conn;
use crate::blocking::refuse_in_async;
use crate::error::{Result, StoreError};
use crate::site::Site;
use crate::store::{Store, files_dir_for};
use crate::value::Value;

/// What is in a store.
#[derive(Debug, Clone)]
pub struct StoreStats {
    /// The store's name.
    pub name: String,
    /// Bytes the store takes: on SQLite its database and write-ahead log
    /// on disk; on PostgreSQL the size of its rows, which share the
    /// server's tables with every other store's (indexes not counted).
    pub bytes: u64,
    /// Items per type, for types with at least one item.
    pub items: Vec<(String, u64)>,
    /// Attached files and their total size.
    pub files: (u64, u64),
    /// Scheduled entries.
    pub scheduled: u64,
    /// Background upgrades still running.
    pub upgrading: Vec<crate::upgrade::Progress>,
}

fn int(v: Option<Value<'static>>) -> u64 {
    match v {
        Some(Value::Integer(i)) => i.max(0) as u64,
        _ => 0,
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

impl Store {
    /// The bytes the store takes ([`StoreStats::bytes`]), without counting
    /// its items. Blocking.
    pub fn bytes(&self) -> Result<u64> {
        self.read_blocking(|r| crate::backend::stored_bytes(r.conn()))
    }

    /// Counts what the store holds.
    pub fn stats(&self) -> Result<StoreStats> {
        let upgrading = self.upgrades_in_progress();
        self.read_blocking(|r| {
            let conn = r.conn();
            let mut items = Vec::new();
            for row in conn.rows("SELECT name FROM _types ORDER BY name", &[])? {
                let Some(Value::Text(name)) = row.into_iter().next() else {
                    continue;
                };
                if upgrading.iter().any(|p| p.item == name.as_ref()) {
                    continue;
                }
                let n = int(conn.scalar(
                    &format!(
                        "SELECT COUNT(*) FROM {}",
                        crate::sql::ident(&crate::item::table_name(&name))
                    ),
                    &[],
                )?);
                if n > 0 {
                    items.push((name.into_owned(), n));
                }
            }
            let files = conn
                .rows(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM _files",
                    &[],
                )?
                .into_iter()
                .next()
                .map(|r| {
                    let mut it = r.into_iter();
                    (int(it.next()), int(it.next()))
                })
                .unwrap_or((0, 0));
            let scheduled = int(conn.scalar("SELECT COUNT(*) FROM _schedule", &[])?);
            Ok(StoreStats {
                name: r.store_name().to_string(),
                bytes: crate::backend::stored_bytes(conn)?,
                items,
                files,
                scheduled,
                upgrading: upgrading.clone(),
            })
        })
    }

    /// Writes a consistent copy of the store, and its attached files, to
    /// `dest` (which must not exist), while the store stays in use.
    pub fn backup_to(&self, dest: impl AsRef<Path>) -> Result<()> {
        refuse_in_async("Store::backup_to", "tokio::task::spawn_blocking")?;
        let dest = dest.as_ref();
        if dest.exists() {
            return Err(StoreError::Io {
                path: dest.to_path_buf(),
                reason: "already exists; a backup never overwrites".into(),
            });
        }
        if self.on_postgres() {
            // A store file, made by copying the store's rows into it.
            let copy = Store::open(dest)?;
            crate::migrate::copy_store(self, &copy, false, &mut Default::default())?;
            return copy.close();
        }
        let conn = Conn::open_file(self.path(), false)?;
        crate::backend::copy_into(&conn, dest)?;
        copy_files(dest, self.files_dir(), &files_dir_for(dest))
    }
}

/// Copies the attached files a (copied) store refers to.
fn copy_files(store: &Path, from: &Path, to: &Path) -> Result<()> {
    let conn = Conn::open_file(store, false)?;
    for row in conn.rows("SELECT path FROM _files", &[])? {
        let Some(Value::Text(rel)) = row.into_iter().next() else {
            continue;
        };
        let (src, dst) = (from.join(rel.as_ref()), to.join(rel.as_ref()));
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        // Hard links cost nothing and are safe: attached files never change.
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| StoreError::io(&src, e))?;
        }
    }
    Ok(())
}

impl Site {
    /// Backs up the whole site into the folder `dest` (which must not
    /// exist): the site store, then every user store, each a consistent
    /// snapshot taken while the site runs. `progress(done, total, name)` is
    /// called after each store.
    pub fn backup(
        &self,
        dest: impl AsRef<Path>,
        mut progress: impl FnMut(usize, usize, &str),
    ) -> Result<()> {
        refuse_in_async("Site::backup", "tokio::task::spawn_blocking")?;
        let dest = dest.as_ref();
        if dest.exists() {
            return Err(StoreError::Io {
                path: dest.to_path_buf(),
                reason: "already exists; a backup never overwrites".into(),
            });
        }
        if self.on_postgres() {
            // The backup of a site in PostgreSQL is the same site in SQLite
            // files: each store a snapshot, as here.
            let copy = Site::open(dest)?;
            self.copy_to(&copy, false, progress)?;
            return copy.close();
        }
        let users = self.user_names()?;
        let total = users.len() + 1;
        std::fs::create_dir_all(dest.join("users")).map_err(|e| StoreError::io(dest, e))?;
        self.store().backup_to(dest.join("site.sqlite"))?;
        progress(1, total, "site");
        for (i, name) in users.iter().enumerate() {
            let target = dest.join("users").join(format!("{name}.sqlite"));
            // Back up without disturbing the cache of open stores.
            let path = self.user_store_path(name)?;
            let conn = Conn::open_file(&path, false)?;
            crate::backend::copy_into(&conn, &target)?;
            drop(conn);
            copy_files(&target, &files_dir_for(&path), &files_dir_for(&target))?;
            progress(i + 2, total, name);
        }
        Ok(())
    }

    /// Writes one user's whole store, attached files included, to the single
    /// file `dest`.
    pub fn export_user(&self, name: &str, dest: impl AsRef<Path>) -> Result<()> {
        refuse_in_async("Site::export_user", "tokio::task::spawn_blocking")?;
        let dest = dest.as_ref();
        let store = self
            .existing_user_store(name)?
            .ok_or_else(|| StoreError::Io {
                path: self.user_store_path(name).unwrap_or_default(),
                reason: format!("no user store named {name:?}"),
            })?;
        if dest.exists() {
            return Err(StoreError::Io {
                path: dest.to_path_buf(),
                reason: "already exists; an export never overwrites".into(),
            });
        }
        let files = if self.on_postgres() {
            // A store file first, made by copying the store's rows into it.
            let copy = Store::open(dest)?;
            crate::migrate::copy_store(&store, &copy, false, &mut Default::default())?;
            let files = copy.files_dir().to_path_buf();
            copy.close()?;
            files
        } else {
            let conn = Conn::open_file(store.path(), false)?;
            crate::backend::copy_into(&conn, dest)?;
            store.files_dir().to_path_buf()
        };
        let out = Conn::open_file(dest, false)?;
        out.begin_write()?;
        out.batch(crate::backend::EXPORT_FILES_TABLE)?;
        for row in out.rows("SELECT path FROM _files", &[])? {
            let Some(Value::Text(rel)) = row.into_iter().next() else {
                continue;
            };
            let src = files.join(rel.as_ref());
            let data = std::fs::read(&src).map_err(|e| StoreError::io(&src, e))?;
            out.execute(
                "INSERT INTO _export_files (path, data) VALUES (?, ?)",
                &[Value::Text(rel), Value::Blob(data.into())],
            )?;
        }
        out.commit()?;
        crate::backend::as_single_file(&out)?;
        if self.on_postgres() {
            // Its files are in it now; those the copy wrote beside it go.
            let _ = std::fs::remove_dir_all(&files);
        }
        Ok(())
    }

    /// Creates user `name`'s store from a file written by
    /// [`Site::export_user`]. Refuses if the user already has a store, or if
    /// the file is not an export this program can read; nothing is changed
    /// then.
    pub fn import_user(&self, name: &str, src: impl AsRef<Path>) -> Result<Store> {
        refuse_in_async("Site::import_user", "tokio::task::spawn_blocking")?;
        let src = src.as_ref();
        let path = self.user_store_path(name)?;
        if path.exists() || self.has_user_store(name)? {
            return Err(StoreError::Io {
                path,
                reason: format!("user {name:?} already has a store; delete it first"),
            });
        }
        if !src.is_file() {
            return Err(StoreError::Io {
                path: src.to_path_buf(),
                reason: "no such file".into(),
            });
        }
        // Work on a copy beside the destination, renamed into place at the end.
        let staging = with_suffix(&path, ".importing");
        let staging_files = files_dir_for(&staging);
        let _ = std::fs::remove_file(&staging);
        let _ = std::fs::remove_dir_all(&staging_files);
        let result = (|| {
            std::fs::copy(src, &staging).map_err(|e| StoreError::io(src, e))?;
            let conn = Conn::open_file(&staging, false).map_err(|e| match e {
                StoreError::NotAStore { reason, .. } => StoreError::NotAStore {
                    path: src.to_path_buf(),
                    reason,
                },
                other => other,
            })?;
            let ours = crate::backend::table_exists(&conn, "_meta")?;
            if !ours {
                return Err(StoreError::NotAStore {
                    path: src.to_path_buf(),
                    reason: "it holds no Mantissa store (empty, or not an export)".into(),
                });
            }
            let has_files = crate::backend::table_exists(&conn, "_export_files")?;
            if has_files {
                for row in conn.rows("SELECT path, data FROM _export_files", &[])? {
                    let mut it = row.into_iter();
                    let (Some(Value::Text(rel)), Some(Value::Blob(data))) = (it.next(), it.next())
                    else {
                        continue;
                    };
                    if rel.contains("..") || rel.starts_with('/') {
                        return Err(StoreError::NotAStore {
                            path: src.to_path_buf(),
                            reason: format!("it names a file outside the store: {rel:?}"),
                        });
                    }
                    let dst = staging_files.join(rel.as_ref());
                    if let Some(dir) = dst.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
                    }
                    std::fs::write(&dst, &data).map_err(|e| StoreError::io(&dst, e))?;
                }
                conn.batch("DROP TABLE _export_files")?;
            }
            // A store brought back is a new sender: the messages waiting in
            // its outbox may have been received since it was exported, under
            // numbers it will now use again (`message.rs`).
            conn.batch(&format!(
                "UPDATE _meta SET value = {} WHERE key = 'id';
                 DELETE FROM _meta WHERE key = 'legacy_outbox';",
                crate::backend::Engine::Sqlite.random_id()
            ))?;
            drop(conn);
            // Opening checks that it is a store of ours at versions we know.
            drop(Store::open(&staging)?);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&staging);
            for s in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(with_suffix(&staging, s));
            }
            let _ = std::fs::remove_dir_all(&staging_files);
            return Err(e);
        }
        for s in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&staging, s));
        }
        if self.on_postgres() {
            // The checked store file is copied into the database, then goes.
            let copied = (|| {
                let from = Store::open(&staging)?;
                let to = self.user_store(name)?;
                crate::migrate::copy_store(&from, &to, false, &mut Default::default())?;
                from.close()
            })();
            let _ = std::fs::remove_file(&staging);
            let _ = std::fs::remove_dir_all(&staging_files);
            if let Err(e) = copied {
                let _ = self.delete_user_store(name);
                return Err(e);
            }
            // Opened again, it knows its identity: the one import gave it.
            self.close_user_store(name)?;
            return self.user_store(name);
        }
        if staging_files.exists() {
            std::fs::rename(&staging_files, files_dir_for(&path))
                .map_err(|e| StoreError::io(&staging_files, e))?;
        }
        std::fs::rename(&staging, &path).map_err(|e| StoreError::io(&staging, e))?;
        self.user_store(name)
    }
}
