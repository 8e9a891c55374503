//! Mantissa's object store: "here's an object, store it".
//!
//! This crate owns persistence for the whole platform: typed items declared
//! with `#[derive(Item)]`, typed queries, transactions, schema versions and
//! upgraders, powerups, the site store and one store per user, the scheduler,
//! the work queue, interstore messages and files attached to items. It knows
//! nothing of HTTP, mail or accounts; those layers are built on it, never
//! the other way round.
//!
//! ```
//! use mantissa_store::{Item, Site, StoreError, Timestamp};
//!
//! #[derive(Item, Debug)]
//! #[item(name = "doc.lib.post", version = 1)]
//! struct Post {
//!     #[item(unique)]
//!     slug: String,
//!     title: String,
//!     #[item(index)]
//!     published: Option<Timestamp>,
//! }
//!
//! # fn main() -> Result<(), StoreError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let site = Site::open(dir.path())?;
//! let alice = site.user_store("alice")?;
//! alice.write_blocking(|tx| -> Result<(), StoreError> {
//!     tx.insert(&Post { slug: "hello".into(), title: "Hello".into(), published: Some(Timestamp::now()) })?;
//!     Ok(())
//! })?;
//! let published = alice.read_blocking(|r| {
//!     r.query::<Post>().filter(Post::published.is_not_null()).count()
//! })?;
//! assert_eq!(published, 1);
//! # Ok(()) }
//! ```
//!
//! The engine's specifics live in the private `backend` module (SQLite's,
//! and the PostgreSQL connection beside them): a backend slots in there
//! without changing this API.

mod backend;
mod blocking;
mod changes;
mod due;
mod error;
mod files;
mod item;
mod message;
mod migrate;
mod ops;
pub mod powerup;
mod query;
mod queue;
mod readers;
mod scheduler;
mod schema;
mod site;
mod sql;
mod store;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
mod tx;
mod upgrade;
mod value;
mod write_lock;
mod writers;

pub use changes::Change;
pub use due::{Background, DueReport};
pub use error::{Result, SchemaMismatch, StoreError};
pub use item::{AttrDef, IndexDef, Item, ItemType, OnDelete, Registry, Stored};
pub use mantissa_store_derive::Item;
pub use message::{Message, MessageId, MessageState, SITE_STORE};
pub use migrate::CopyReport;
pub use ops::StoreStats;
pub use powerup::Interface;
pub use query::{Attr, Cond, Query, Sort, Summable};
pub use queue::Listener;
pub use readers::use_reader_queue;
pub use scheduler::{ScheduleEntry, Scheduled};
pub use serde;
pub use site::{DEFAULT_OPEN_STORES, Site, check_store_name};
pub use store::Store;
pub use tx::{Read, Write};
pub use upgrade::{Progress, UpgradeFn, UpgraderRegistration, Upgrading};
pub use value::{AttrKind, Attribute, Decimal, Ref, Timestamp, Value, ValueError};

/// Used by the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::item::{ItemRegistration, TypeSlot};
    pub use crate::message::MessageRegistration;
    pub use crate::powerup::PowerupRegistration;
    pub use crate::queue::ListenerRegistration;
    pub use crate::scheduler::ScheduledRegistration;
    pub use inventory;

    pub const fn assert_ref<T: crate::Attribute>() {
        assert!(
            T::REFERENCES.is_some(),
            "on_delete is only for Ref<_> attributes"
        )
    }

    pub const fn assert_nullable_ref<T: crate::Attribute>() {
        assert!(
            T::REFERENCES.is_some() && T::NULLABLE,
            "on_delete = \"nullify\" needs an Option<Ref<_>> attribute"
        )
    }
}
