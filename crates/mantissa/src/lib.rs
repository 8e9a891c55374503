//! Mantissa: an application platform in one Rust binary.
//!
//! Mantissa is an alternative to the LAMP stack: an asynchronous
//! multiprotocol application server, an embedded object database, and the
//! services web applications keep rebuilding (accounts, pretty URLs and
//! templates, mail in and out, feeds, live pages, SIP voice). Every user of a
//! site gets a store of their own, a separate SQLite file, so a user's data is
//! written, exported, backed up and deleted as one file and never leaks into
//! another user's query.
//!
//! This crate is the facade: an application depends on `mantissa` alone and
//! finds the whole public API here. Each layer is a module named after it
//! ([`store`] today; the server, web, accounts, mail, feeds and voice layers
//! join as they arrive), and the items used most often are re-exported at
//! the top:
//!
//! ```
//! use mantissa::{Item, Site};
//!
//! #[derive(Item)]
//! #[item(name = "doc.facade.note", version = 1)]
//! struct Note {
//!     text: String,
//! }
//!
//! # fn main() -> Result<(), mantissa::StoreError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let site = Site::open(dir.path())?;
//! let store = site.user_store("alice")?;
//! store.write_blocking(|tx| tx.insert(&Note { text: "hello".into() }))?;
//! assert_eq!(store.read_blocking(|r| r.query::<Note>().count())?, 1);
//! # Ok(()) }
//! ```
//!
//! `#[derive(Item)]` finds the store through `::mantissa::store` when an
//! application depends on this crate only, so that path stays.
//!
//! The [`cli`] module holds the `mantissa` command line's commands; the
//! binary (`src/main.rs`) only parses arguments, calls them and maps the
//! result to an exit code.

pub use mantissa_accounts as accounts;
pub use mantissa_mail as mail;
pub use mantissa_mail_proto as mail_proto;
pub use mantissa_server as server;
pub use mantissa_store as store;
pub use mantissa_web as web;

pub use mantissa_store::{
    Cond, Decimal, Item, Query, Read, Ref, Result, Site, Store, StoreError, StoreStats, Stored,
    Timestamp, Write,
};

pub mod cli;
pub mod receiving;
#[cfg(feature = "testing")]
pub mod testing;

/// The README's examples, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The guide's examples, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../GUIDE.md")]
pub struct GuideDoctests;
