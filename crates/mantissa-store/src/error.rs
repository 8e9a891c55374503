//! The store's error type. Every variant names the file, type or attribute
//! it is about, so a message read in a log says what to fix.

use std::path::PathBuf;

use crate::value::ValueError;

/// Everything that can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not a SQLite database, or not one of ours.
    #[error("{path}: not a Mantissa store ({reason})")]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// SQLite reports damage.
    #[error("{path}: the store is corrupt ({reason}); restore it from a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        reason: String,
    },
    /// The store holds a type at a version newer than this program knows.
    #[error(
        "{path}: written by a newer version of the application ({item} is at version {stored}, this program knows up to {known}); upgrade the program"
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// The item type.
        item: String,
        /// The version in the store.
        stored: u32,
        /// The version this program declares.
        known: u32,
    },
    /// The store file format itself is newer than this program.
    #[error(
        "{path}: store format {found} is newer than this program's ({known}); upgrade the program"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: i64,
        /// The format known.
        known: i64,
    },
    /// Two item types claim one stable name.
    #[error("item type name {name:?} is registered twice: by {first} and by {second}")]
    DuplicateType {
        /// The name.
        name: String,
        /// One Rust type.
        first: String,
        /// The other.
        second: String,
    },
    /// Two upgraders for one step.
    #[error("two upgraders are registered for {item} from version {from}")]
    DuplicateUpgrader {
        /// The item type.
        item: String,
        /// The version they upgrade from.
        from: u32,
    },
    /// An upgrade step has no upgrader.
    #[error(
        "{path}: {item} is stored at version {stored} but no upgrader from version {missing} is registered"
    )]
    MissingUpgrader {
        /// The file.
        path: PathBuf,
        /// The item type.
        item: String,
        /// The version in the store.
        stored: u32,
        /// The step without an upgrader.
        missing: u32,
    },
    /// An upgrader failed.
    #[error("upgrading {item} #{id} from version {from}: {reason}")]
    UpgradeFailed {
        /// The item type.
        item: String,
        /// The item's id.
        id: i64,
        /// The version being upgraded from.
        from: u32,
        /// What the upgrader said.
        reason: String,
    },
    /// A type used with a store is not registered (it has no `#[derive(Item)]`
    /// in this program, or is not linked).
    #[error("item type {0:?} is not registered in this program")]
    UnknownType(String),
    /// No item with this id.
    #[error("{item} #{id} does not exist")]
    NotFound {
        /// The item type.
        item: &'static str,
        /// The id asked for.
        id: i64,
    },
    /// A unique attribute already has this value, or a reference points
    /// nowhere, or a delete is refused by a reference.
    #[error("{0}")]
    Constraint(String),
    /// A stored value does not fit its attribute.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A user store name is not acceptable.
    #[error("{name:?} is not a valid store name: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The closure given to a transaction panicked; the transaction was
    /// rolled back.
    #[error("transaction panicked and was rolled back: {0}")]
    Panicked(String),
    /// The store was closed ([`Store::close`](crate::Store::close), or the
    /// site shut down) while this handle was still held.
    #[error("the store is closed")]
    Closed,
    /// A write of a store from inside a write of the same store: it would
    /// wait for itself for ever. Nothing was written.
    #[error(
        "a write of store {store:?} was started inside a write of the same store, where it would wait for itself for ever; do all of it in the one transaction (the Write you were given), or write after it returns"
    )]
    NestedWrite {
        /// The store.
        store: String,
    },
    /// A write that would wait for ever: the thread writing the store it
    /// needs is itself waiting (through the stores listed) for a store this
    /// thread is writing. Refused, and rolled back.
    #[error(
        "a write of store {:?} would wait for ever: its writer is waiting, through {}, for a store this write holds; take stores in one order (user stores before the site store)", stores[0], stores.join(" -> ")
    )]
    Deadlock {
        /// The store asked for, then each store the chain of writers waits
        /// for.
        stores: Vec<String>,
    },
    /// A blocking call made where it would block the async runtime's
    /// thread. Refused before anything was done.
    #[error(
        "{call} blocks, and was called on an async runtime thread, where it would stop every task on that thread; use {instead} (or call it inside tokio::task::spawn_blocking)"
    )]
    BlockingInAsync {
        /// The call, as `Store::write_blocking`.
        call: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
    /// An item type's fields no longer match its table in a store, at the
    /// same version: the struct was changed without raising its version.
    #[error("{0}")]
    SchemaMismatch(Box<SchemaMismatch>),
    /// A file operation failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// A file attached to an item was given a name that cannot be a file's.
    #[error(
        "{name:?} is not a valid file name: use 1 to 200 characters, no '/', '\\' or leading '.'"
    )]
    BadFileName {
        /// The name.
        name: String,
    },
    /// An interstore message, or its answer, does not convert to or from
    /// JSON.
    #[error(
        "{} {message} {}: {reason}",
        if *answer { "answer to" } else { "message" },
        if *writing { "cannot be written" } else { "is malformed" }
    )]
    MessageFormat {
        /// The message type's name.
        message: &'static str,
        /// Whether it is the answer, not the message.
        answer: bool,
        /// Whether it was being written, not read.
        writing: bool,
        /// What serde said.
        reason: String,
    },
    /// A message was sent to a store that does not exist.
    #[error("no store named {0:?}")]
    NoSuchStore(String),
    /// An installed powerup's type does not provide the interface it was
    /// installed for.
    #[error("powerup {provider} #{id} does not provide {interface}")]
    NotAPowerup {
        /// The provider's item type.
        provider: String,
        /// The provider's id.
        id: i64,
        /// The interface.
        interface: &'static str,
    },
    /// [`Site::copy_to`](crate::Site::copy_to) found a store of the
    /// target holding something of its own (not an earlier copy of the
    /// same store), and was not told to replace it. Nothing was copied
    /// into that store.
    #[error(
        "the target's store {store:?} holds items of its own; copy into an empty site, or replace what is there"
    )]
    TargetNotEmpty {
        /// The store's name.
        store: String,
    },
    /// Any other database error.
    #[error("{path}: database error: {reason}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What the database said.
        reason: String,
    },
}

/// What [`StoreError::SchemaMismatch`] says.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{path}: item type {item} does not match its table at version {version} ({differences}); raise its version and register an upgrader (upgrader!) from {version}"
)]
pub struct SchemaMismatch {
    /// The file.
    pub path: PathBuf,
    /// The item type.
    pub item: String,
    /// Its version, in the program and in the store.
    pub version: u32,
    /// What differs, field by field.
    pub differences: String,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a scheduled run, a listener or a message handler failed, in its
/// implementor's words (whatever its error type): the store only logs it
/// and keeps it as the entry's last error.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl Failure {
    pub(crate) fn of(e: impl std::fmt::Display) -> Failure {
        Failure(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::of(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
