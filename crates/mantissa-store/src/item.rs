//! The `Item` trait and the registry of item types linked into the binary.
//!
//! An item type is a plain struct with `#[derive(Item)]`. The derive submits
//! an [`ItemRegistration`] to a link-time registry (the `inventory` crate), so
//! a store knows every type and upgrader in the program without a hand-kept
//! list; [`Registry::get`] collects them once and refuses a program in which
//! two types claim the same stable name.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

use crate::backend::{Dialect, Sqlite};
use crate::error::StoreError;
use crate::upgrade::{UpgradeFn, UpgraderRegistration};
use crate::value::{AttrKind, Ref, Value, ValueError};

/// A persistent item type. Derive it; do not implement it by hand.
///
/// ```
/// use mantissa_store::{Item, Ref, Timestamp};
///
/// #[derive(Item, Debug)]
/// #[item(name = "doc.author", version = 1)]
/// struct Author {
///     #[item(unique)]
///     name: String,
/// }
///
/// #[derive(Item, Debug)]
/// #[item(name = "doc.book", version = 1, index(author, published))]
/// struct Book {
///     title: String,
///     #[item(on_delete = "cascade")]
///     author: Ref<Author>,
///     published: Option<Timestamp>,
///     #[item(default = 0)]
///     copies_sold: i64,
/// }
///
/// assert_eq!(<Book as Item>::NAME, "doc.book");
/// assert_eq!(Book::ATTRS.len(), 4);
/// ```
pub trait Item: Sized + Send + Sync + 'static {
    /// The stable name: it names the table, so it never changes once items
    /// are stored (rename the Rust struct freely instead).
    const NAME: &'static str;
    /// The schema version; bump it and register an upgrader when the shape
    /// changes.
    const VERSION: u32;
    /// One description per attribute, in declaration order.
    const ATTRS: &'static [AttrDef];
    /// Compound indexes.
    const INDEXES: &'static [IndexDef];

    /// The attribute values, in the order of [`Item::ATTRS`] (an array: no
    /// allocation per item written).
    fn values(&self) -> impl AsRef<[Value<'_>]>;
    /// Where the registry notes this type's place in it; written by the
    /// derive, not part of the API.
    #[doc(hidden)]
    fn __type_slot() -> &'static TypeSlot;

    /// Builds an item from values in the order of [`Item::ATTRS`] (taken
    /// one at a time, so that a row of a query needs no list of its own).
    fn from_values(values: impl Iterator<Item = Value<'static>>) -> Result<Self, ValueError>;
}

/// A type's place in the [`Registry`], found by name once and kept here
/// (one per item type, made by the derive), so that the hot paths of
/// queries and inserts do not hash the type's name each time.
#[doc(hidden)]
#[derive(Debug)]
pub struct TypeSlot(OnceLock<Option<usize>>);

impl TypeSlot {
    #[doc(hidden)]
    #[allow(clippy::new_without_default)]
    pub const fn new() -> TypeSlot {
        TypeSlot(OnceLock::new())
    }
}

/// What happens to an item whose reference points at an item being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// Delete the referring item too.
    Cascade,
    /// Clear the reference (the attribute must be optional).
    Nullify,
    /// Refuse to delete the referenced item while it is referred to.
    Refuse,
}

/// The description of one attribute, written by the derive.
#[derive(Debug, Clone, Copy)]
pub struct AttrDef {
    /// The attribute (and column) name.
    pub name: &'static str,
    /// Its kind.
    pub kind: AttrKind,
    /// Whether it is an `Option`.
    pub nullable: bool,
    /// For references, the referenced type's stable name.
    pub references: Option<&'static str>,
    /// Whether it has an index of its own.
    pub index: bool,
    /// Whether its values are unique within the store.
    pub unique: bool,
    /// An SQL literal used when an upgrade adds the attribute.
    pub default: Option<&'static str>,
    /// The rule for references.
    pub on_delete: OnDelete,
}

/// A compound index over several attributes.
#[derive(Debug, Clone, Copy)]
pub struct IndexDef {
    /// The attributes, in index order.
    pub attrs: &'static [&'static str],
    /// Whether the combination is unique.
    pub unique: bool,
}

/// An item as it is stored: the item and its id.
///
/// Derefs to the item, so `post.title` reads naturally; `post.id()` is the
/// reference other items store.
#[derive(Debug, Clone)]
pub struct Stored<T: Item> {
    id: Ref<T>,
    item: T,
}

impl<T: Item> Stored<T> {
    pub(crate) fn new(id: Ref<T>, item: T) -> Self {
        Stored { id, item }
    }

    /// The item's id.
    pub fn id(&self) -> Ref<T> {
        self.id
    }

    /// The item, without its id.
    pub fn into_inner(self) -> T {
        self.item
    }
}

impl<T: Item> Deref for Stored<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.item
    }
}

impl<T: Item> DerefMut for Stored<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.item
    }
}

/// A registered item type, as the schema code needs it: no generics.
#[derive(Debug, Clone, Copy)]
pub struct ItemType {
    /// The stable name.
    pub name: &'static str,
    /// The current schema version.
    pub version: u32,
    /// The attributes.
    pub attrs: &'static [AttrDef],
    /// The compound indexes.
    pub indexes: &'static [IndexDef],
    /// The Rust type, for error messages.
    pub rust_type: fn() -> &'static str,
    /// Checks that values (in attribute order) make a valid item.
    pub validate: fn(Vec<Value<'static>>) -> Result<(), ValueError>,
}

fn validate<T: Item>(values: Vec<Value<'static>>) -> Result<(), ValueError> {
    T::from_values(values.into_iter()).map(drop)
}

impl ItemType {
    /// The table that holds items of this type.
    pub fn table(&self) -> String {
        table_name(self.name)
    }
}

/// The table name for an item type's stable name.
pub(crate) fn table_name(item: &str) -> String {
    format!("item_{item}")
}

/// Submitted by `#[derive(Item)]`; not for hand use.
#[doc(hidden)]
pub struct ItemRegistration(pub ItemType);

impl ItemRegistration {
    #[doc(hidden)]
    pub const fn of<T: Item>() -> ItemRegistration {
        ItemRegistration(ItemType {
            name: T::NAME,
            version: T::VERSION,
            attrs: T::ATTRS,
            indexes: T::INDEXES,
            rust_type: std::any::type_name::<T>,
            validate: validate::<T>,
        })
    }
}

inventory::collect!(ItemRegistration);

/// Every item type and upgrader linked into this program.
#[derive(Debug)]
pub struct Registry {
    types: Vec<ItemType>,
    by_name: HashMap<&'static str, usize>,
    upgraders: HashMap<(&'static str, u32), UpgradeFn>,
    /// SQL text per type and [`Statement`], made on first use.
    statements: Vec<[OnceLock<Arc<str>>; 3]>,
    /// The `CREATE TABLE` text of each type's table, as SQLite keeps it.
    creates: Vec<OnceLock<String>>,
    /// Whether a listener follows each type (`queue.rs`).
    listened: Vec<bool>,
    /// Whether the database may refuse an item of each type for what it
    /// holds (a unique index, a reference it checks).
    refusable: Vec<bool>,
}

/// The statements written once per item type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Statement {
    Insert = 0,
    Update = 1,
    /// `SELECT id, a, b, … FROM table`.
    SelectItems = 2,
}

impl Registry {
    /// The registry, collected on first use. Fails, every time it is asked,
    /// if two types share a stable name or two upgraders the same step.
    pub fn get() -> Result<&'static Registry, StoreError> {
        static REGISTRY: OnceLock<Result<Registry, StoreError>> = OnceLock::new();
        REGISTRY
            .get_or_init(Registry::collect)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn collect() -> Result<Registry, StoreError> {
        let mut types: Vec<ItemType> = inventory::iter::<ItemRegistration>
            .into_iter()
            .map(|r| r.0)
            .collect();
        types.sort_by_key(|t| t.name);
        let mut by_name = HashMap::new();
        for (i, t) in types.iter().enumerate() {
            if let Some(&j) = by_name.get(t.name) {
                let other: &ItemType = &types[j];
                return Err(StoreError::DuplicateType {
                    name: t.name.to_string(),
                    first: (other.rust_type)().to_string(),
                    second: (t.rust_type)().to_string(),
                });
            }
            by_name.insert(t.name, i);
        }
        let mut upgraders = HashMap::new();
        for u in inventory::iter::<UpgraderRegistration> {
            if upgraders.insert((u.item, u.from), u.upgrade).is_some() {
                return Err(StoreError::DuplicateUpgrader {
                    item: u.item.to_string(),
                    from: u.from,
                });
            }
        }
        Ok(Registry {
            statements: types.iter().map(|_| Default::default()).collect(),
            creates: types.iter().map(|_| OnceLock::new()).collect(),
            listened: types
                .iter()
                .map(|t| crate::queue::is_listened(t.name))
                .collect(),
            refusable: types
                .iter()
                .map(|t| {
                    t.attrs.iter().any(|a| a.unique || a.references.is_some())
                        || t.indexes.iter().any(|ix| ix.unique)
                })
                .collect(),
            types,
            by_name,
            upgraders,
        })
    }

    /// Every registered type, sorted by name.
    pub fn types(&self) -> &[ItemType] {
        &self.types
    }

    /// The type with this stable name.
    pub fn find(&self, name: &str) -> Option<&ItemType> {
        self.by_name.get(name).map(|&i| &self.types[i])
    }

    /// The type with this stable name, and its index in [`Registry::types`].
    pub(crate) fn position(&self, name: &str) -> Option<(usize, &ItemType)> {
        self.by_name.get(name).map(|&i| (i, &self.types[i]))
    }

    /// The `CREATE TABLE` text of type `i`'s table, as SQLite keeps it in
    /// its schema (without the closing semicolon). It is the type's shape
    /// on PostgreSQL as well: a fingerprint of the declared type, which
    /// `_types` keeps beside its version.
    pub(crate) fn create_sql(&self, i: usize) -> &str {
        self.creates[i].get_or_init(|| {
            let t = &self.types[i];
            Sqlite::create_table(t, &t.table())
                .trim_end_matches([';', '\n'])
                .to_string()
        })
    }

    /// `T`'s index in [`Registry::types`].
    pub(crate) fn index_of<T: Item>(&self) -> Result<usize, StoreError> {
        T::__type_slot()
            .0
            .get_or_init(|| self.by_name.get(T::NAME).copied())
            .ok_or_else(|| StoreError::UnknownType(T::NAME.to_string()))
    }

    /// Whether inserting an item of type `i` gives a listener work.
    pub(crate) fn is_listened(&self, i: usize) -> bool {
        self.listened[i]
    }

    /// Whether the database may refuse to insert an item of type `i` whose
    /// values are `values`: for a unique index or a reference it checks,
    /// for a missing value, or for text PostgreSQL cannot hold (a NUL).
    /// Else only a failing database refuses it (a full disk), and
    /// PostgreSQL runs it without a savepoint ([`crate::backend::Conn::insert_unguarded`]).
    pub(crate) fn insert_refusable(&self, i: usize, values: &[Value<'_>]) -> bool {
        self.refusable[i]
            || values.len() != self.types[i].attrs.len()
            || values
                .iter()
                .zip(self.types[i].attrs)
                .any(|(v, a)| match v {
                    Value::Null => !a.nullable,
                    Value::Text(t) => t.contains('\0'),
                    _ => false,
                })
    }

    /// The SQL text of one of `T`'s statements.
    pub(crate) fn statement<T: Item>(&self, which: Statement) -> Result<Arc<str>, StoreError> {
        let i = self.index_of::<T>()?;
        let t = &self.types[i];
        Ok(self.statements[i][which as usize]
            .get_or_init(|| match which {
                Statement::Update => crate::sql::update(t).into(),
                Statement::Insert => crate::sql::insert(t, &t.table(), false).into(),
                Statement::SelectItems => {
                    let mut cols = vec!["id".to_string()];
                    cols.extend(t.attrs.iter().map(|a| crate::sql::ident(a.name)));
                    format!(
                        "SELECT {} FROM {}",
                        cols.join(", "),
                        crate::sql::ident(&t.table())
                    )
                    .into()
                }
            })
            .clone())
    }

    pub(crate) fn upgrader(&self, item: &str, from: u32) -> Option<UpgradeFn> {
        self.upgraders.get(&(item, from)).copied()
    }
}
