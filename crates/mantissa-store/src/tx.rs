//! Transactions: [`Read`] (a consistent snapshot) and [`Write`]
//! (all-or-nothing), the two views a closure passed to
//! [`Store::read`](crate::Store::read) or [`Store::write`](crate::Store::write)
//! gets.

use std::ops::Deref;
use std::path::PathBuf;

use crate::backend::Conn;
use crate::error::{Result, StoreError};
use crate::item::{Item, Stored, table_name};
use crate::query::{Cond, Query};
use crate::sql::{self, Expr};
use crate::store::{Shared, Store};
use crate::value::{Ref, Timestamp, Value};

/// A read transaction: every query in it sees the store as it was when it
/// began, whatever writers do meanwhile.
#[derive(Clone, Copy)]
pub struct Read<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) shared: &'a Shared,
    /// The store, in a read: reads take its write lock to finish an
    /// upgrade. `None` in the write transaction, which holds the lock.
    pub(crate) store: Option<&'a Store>,
}

impl<'a> Read<'a> {
    pub(crate) fn conn(&self) -> &'a Conn {
        self.conn
    }

    /// The name of the store: "site", or the user's name.
    pub fn store_name(&self) -> &str {
        &self.shared.name
    }

    /// Makes sure no item of type `name` is still at an old version: a
    /// background upgrade in progress is finished first.
    pub(crate) fn ensure_current(&self, name: &str) -> Result<()> {
        if !self.shared.upgrade_pending(name) {
            return Ok(());
        }
        match self.store {
            None => crate::upgrade::finish(self.conn, self.shared, name),
            Some(store) => {
                let owned = name.to_string();
                store
                    .with_writer(move |w| crate::upgrade::finish(w.conn(), &w.shared, &owned))??;
                // This snapshot predates the upgrade: take a new one, before
                // anything of this type has been read.
                self.conn.rollback();
                self.conn.begin_read()
            }
        }
    }

    /// Whether items of type `name` can be here: any upgrade of the type
    /// finished, and its table compared with it on first use. `false` when
    /// the store has no table for the type (so no items).
    pub(crate) fn has_table<T: Item>(&self) -> Result<bool> {
        self.ensure_current(T::NAME)?;
        let i = self.shared.registry.index_of::<T>()?;
        crate::schema::has_table_at(self.conn, self.shared, i, self.store.is_none())
    }

    /// Runs a query of an item table whose [`Read::has_table`] said yes.
    /// A read whose snapshot began before the table was made (by a write
    /// that committed meanwhile) finds none: no items, then.
    pub(crate) fn rows<T: Item>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&mut crate::backend::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        match self.conn.query(sql, params, f) {
            Err(e) if self.store.is_some() && crate::backend::is_missing_table(&e) => Ok(()),
            Err(e) => Err(self.explain::<T>(e)),
            ok => ok,
        }
    }

    /// An error from a statement on `T`'s table, explained
    /// ([`crate::schema::explain`]).
    pub(crate) fn explain<T: Item>(&self, e: StoreError) -> StoreError {
        match self.shared.registry.index_of::<T>() {
            Ok(i) => crate::schema::explain(self.conn, self.shared, i, e),
            Err(_) => e,
        }
    }

    pub(crate) fn select_items<T: Item>(&self) -> Result<std::sync::Arc<str>> {
        self.shared
            .registry
            .statement::<T>(crate::item::Statement::SelectItems)
    }

    /// A query over items of type `T`.
    pub fn query<T: Item>(&self) -> Query<'a, T> {
        Query::new(*self)
    }

    /// The item with this id, if it exists.
    pub fn find<T: Item>(&self, id: Ref<T>) -> Result<Option<Stored<T>>> {
        self.query::<T>()
            .filter(Cond::<T>::id_is(id))
            .all()
            .map(|v| v.into_iter().next())
    }

    /// The item with this id.
    pub fn get<T: Item>(&self, id: Ref<T>) -> Result<Stored<T>> {
        self.find(id)?.ok_or(StoreError::NotFound {
            item: T::NAME,
            id: id.id(),
        })
    }

    /// The contents of a file attached to an item.
    pub fn file<T: Item>(&self, item: Ref<T>, name: &str) -> Result<Option<Vec<u8>>> {
        if self.conn.engine() == crate::backend::Engine::Postgres {
            return Ok(self.file_row(item, name)?.map(|(_, data)| data));
        }
        match self.file_path(item, name)? {
            None => Ok(None),
            Some(p) => std::fs::read(&p)
                .map(Some)
                .map_err(|e| StoreError::io(p, e)),
        }
    }

    /// Where a file attached to an item is on disk (read it, do not write it).
    /// On PostgreSQL, a copy on this node's disk, made on first use.
    pub fn file_path<T: Item>(&self, item: Ref<T>, name: &str) -> Result<Option<PathBuf>> {
        if self.conn.engine() == crate::backend::Engine::Postgres {
            let Some((rel, data)) = self.file_row(item, name)? else {
                return Ok(None);
            };
            let path = self.shared.files_dir.join(&rel);
            if !path.is_file() {
                // Written whole under another name, then renamed: a reader
                // never sees part of it. Its name is never used for other
                // contents, so a copy made once stays right.
                let dir = path.parent().expect("file path has a parent");
                std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
                let tmp = path.with_extension(format!("partial-{}", std::process::id()));
                std::fs::write(&tmp, &data)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| StoreError::io(&path, e))?;
            }
            return Ok(Some(path));
        }
        let v = self.conn.scalar(
            "SELECT path FROM _files WHERE item_type = ? AND item_id = ? AND name = ?",
            &[
                Value::Text(T::NAME.into()),
                Value::Integer(item.id()),
                Value::Text(name.into()),
            ],
        )?;
        Ok(match v {
            Some(Value::Text(p)) => Some(self.shared.files_dir.join(p.as_ref())),
            _ => None,
        })
    }

    /// A file's name beside the store and its contents, from its row
    /// (PostgreSQL).
    fn file_row<T: Item>(&self, item: Ref<T>, name: &str) -> Result<Option<(String, Vec<u8>)>> {
        let row = self.conn.rows(
            "SELECT path, data FROM _files WHERE item_type = ? AND item_id = ? AND name = ?",
            &[
                Value::Text(T::NAME.into()),
                Value::Integer(item.id()),
                Value::Text(name.into()),
            ],
        )?;
        let mut it = row.into_iter().next().unwrap_or_default().into_iter();
        Ok(match (it.next(), it.next()) {
            (Some(Value::Text(rel)), Some(Value::Blob(data))) => {
                Some((rel.into_owned(), data.into_owned()))
            }
            _ => None,
        })
    }

    /// The names of the files attached to an item.
    pub fn files<T: Item>(&self, item: Ref<T>) -> Result<Vec<String>> {
        let rows = self.conn.rows(
            "SELECT name FROM _files WHERE item_type = ? AND item_id = ? ORDER BY name",
            &[Value::Text(T::NAME.into()), Value::Integer(item.id())],
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| crate::schema::text(r.into_iter().next()))
            .collect())
    }
}

impl<I: Item> Cond<I> {
    /// The item with this id.
    pub fn id_is(id: Ref<I>) -> Cond<I> {
        Cond::from_expr(Expr::Cmp {
            col: "id",
            kind: crate::value::AttrKind::Integer,
            op: "=",
            value: Value::Integer(id.id()),
        })
    }
}

/// A write transaction: everything done through it commits together when
/// the closure returns `Ok`, and nothing does if it returns `Err` or panics.
pub struct Write<'a> {
    read: Read<'a>,
    pub(crate) earliest_schedule: Option<Timestamp>,
    /// Whether files may have been put on the trash list, to be removed
    /// once this commits.
    pub(crate) touched_files: bool,
    /// The item types written (indexes in the registry), for the change
    /// this announces when it commits (`changes.rs`).
    changed: Vec<usize>,
}

impl<'a> Deref for Write<'a> {
    type Target = Read<'a>;
    fn deref(&self) -> &Read<'a> {
        &self.read
    }
}

impl<'a> Write<'a> {
    pub(crate) fn new(conn: &'a Conn, shared: &'a Shared) -> Self {
        Write {
            read: Read {
                conn,
                shared,
                store: None,
            },
            earliest_schedule: None,
            touched_files: false,
            changed: Vec::new(),
        }
    }

    /// Notes that items of type `T` are written.
    fn changes<T: Item>(&mut self) -> Result<()> {
        let i = self.shared.registry.index_of::<T>()?;
        if !self.changed.contains(&i) {
            self.changed.push(i);
        }
        Ok(())
    }

    /// What this transaction changed, if anything, and if anyone may hear
    /// of it: none when the store announces nowhere.
    pub(crate) fn change(&self) -> Option<crate::changes::Change> {
        let announcer = self.shared.announcer.as_ref()?;
        if self.changed.is_empty() {
            return None;
        }
        // On SQLite only this process hears: when nobody subscribed,
        // nothing is made.
        if self.conn.engine() == crate::backend::Engine::Sqlite && announcer.receiver_count() == 0 {
            return None;
        }
        let types = self.shared.registry.types();
        let mut item_types: Vec<String> = self
            .changed
            .iter()
            .map(|&i| types[i].name.to_string())
            .collect();
        item_types.sort();
        Some(crate::changes::Change {
            store: self.shared.name.clone(),
            item_types,
        })
    }

    /// Notes that this transaction gives the store work due at `at` (a
    /// schedule entry, an item for a listener, a message to deliver).
    pub(crate) fn note_work_at(&mut self, at: Timestamp) {
        self.earliest_schedule = Some(self.earliest_schedule.map_or(at, |e| e.min(at)));
    }

    pub(crate) fn shared(&self) -> &'a Shared {
        self.read.shared
    }

    /// Stores a new item and returns its id. Ids are never reused, even after
    /// the item is deleted.
    pub fn insert<T: Item>(&mut self, item: &T) -> Result<Ref<T>> {
        self.changes::<T>()?;
        if !self.has_table::<T>()? {
            crate::schema::create(self.conn, self.shared, T::NAME)?;
        }
        let sql = self
            .shared
            .registry
            .statement::<T>(crate::item::Statement::Insert)?;
        let registry = &self.shared.registry;
        let i = registry.index_of::<T>()?;
        let values = item.values();
        let id = if registry.insert_refusable(i, values.as_ref()) {
            self.conn.insert(&sql, values.as_ref())
        } else {
            self.conn.insert_unguarded(&sql, values.as_ref())
        }
        .map_err(|e| self.explain::<T>(e))?;
        if registry.is_listened(i) {
            self.note_work_at(Timestamp::now());
        }
        Ok(Ref::from_id(id))
    }

    /// Stores a new item and returns it with its id.
    pub fn create<T: Item>(&mut self, item: T) -> Result<Stored<T>> {
        let id = self.insert(&item)?;
        Ok(Stored::new(id, item))
    }

    /// Writes back a changed item.
    pub fn update<T: Item>(&mut self, item: &Stored<T>) -> Result<()> {
        self.changes::<T>()?;
        let changed = if self.has_table::<T>()? {
            let sql = self
                .shared
                .registry
                .statement::<T>(crate::item::Statement::Update)?;
            let mut params = item.values().as_ref().to_vec();
            params.push(Value::Integer(item.id().id()));
            self.conn
                .execute(&sql, &params)
                .map_err(|e| self.explain::<T>(e))?
        } else {
            0
        };
        match changed {
            0 => Err(StoreError::NotFound {
                item: T::NAME,
                id: item.id().id(),
            }),
            _ => Ok(()),
        }
    }

    /// Deletes an item, applying the on-delete rules of references to it and
    /// removing its files, powerups and schedule.
    pub fn delete<T: Item>(&mut self, id: Ref<T>) -> Result<()> {
        match self.delete_where(Cond::<T>::id_is(id))? {
            0 => Err(StoreError::NotFound {
                item: T::NAME,
                id: id.id(),
            }),
            _ => Ok(()),
        }
    }

    /// Deletes every item meeting `cond`; returns how many.
    pub fn delete_where<T: Item>(&mut self, cond: Cond<T>) -> Result<usize> {
        if !self.has_table::<T>()? {
            return Ok(0);
        }
        self.changes::<T>()?;
        // What refers to `T` may be deleted or changed by cascade, and what
        // refers to that in turn.
        let types = self.shared.registry.types();
        let mut reached = vec![T::NAME];
        while let Some(name) = reached.pop() {
            for (i, t) in types.iter().enumerate() {
                let reaches = t.attrs.iter().any(|a| {
                    a.references == Some(name) && a.on_delete != crate::item::OnDelete::Refuse
                });
                if reaches && !self.changed.contains(&i) {
                    self.changed.push(i);
                    reached.push(t.name);
                }
            }
        }
        // Deleted items' files go on the trash list (their tables' delete
        // triggers), and so may those of items deleted by cascade.
        self.touched_files = true;
        let mut params = sql::Params::new();
        let mut sql = format!("DELETE FROM {} WHERE ", sql::ident(&table_name(T::NAME)));
        cond.expr.write(&mut sql, &mut params);
        self.conn.execute(&sql, &params)
    }

    /// Stores `item` as the only item of its type (for configuration kept
    /// as one item): updates the existing one, or inserts it.
    pub fn put_only<T: Item>(&mut self, item: T) -> Result<Stored<T>> {
        match self.query::<T>().first()? {
            Some(existing) => {
                let stored = Stored::new(existing.id(), item);
                self.update(&stored)?;
                Ok(stored)
            }
            None => self.create(item),
        }
    }

    /// Runs `f` in a savepoint: if it fails, what it did is undone and the
    /// error returned, while the rest of the transaction goes on.
    pub fn savepoint<R, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Write<'a>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mark = crate::upgrade::mark(self.shared());
        self.conn.batch("SAVEPOINT mantissa_sp")?;
        match f(self) {
            Ok(v) => {
                self.conn.batch("RELEASE mantissa_sp")?;
                Ok(v)
            }
            Err(e) => {
                self.conn
                    .batch("ROLLBACK TO mantissa_sp; RELEASE mantissa_sp")?;
                crate::upgrade::rolled_back_to(self.shared(), mark);
                Err(e)
            }
        }
    }
}
