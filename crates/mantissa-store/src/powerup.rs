//! Powerups: items installed on a store, or on another item, as providers of
//! a Rust trait.
//!
//! This is how applications plug into a user's store without the store
//! knowing them: an offering installs an item that implements, say,
//! `Navigation`, and the web layer asks the store for every `Navigation`
//! provider, in priority order, as trait objects. (Axiom's powerups, with a
//! Rust trait where Axiom had a zope interface.)
//!
//! ```
//! use mantissa_store::{Interface, Item, Site, powerup};
//!
//! pub trait Greeter: Send {
//!     fn greet(&self) -> String;
//! }
//! impl Interface for dyn Greeter {
//!     const NAME: &'static str = "doc.greeter";
//! }
//!
//! #[derive(Item)]
//! #[item(name = "doc.pu.polite", version = 1)]
//! struct Polite { name: String }
//! impl Greeter for Polite {
//!     fn greet(&self) -> String { format!("Good day, {}.", self.name) }
//! }
//! powerup!(Polite as dyn Greeter);
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let store = Site::open(dir.path()).unwrap().user_store("bob").unwrap();
//! store.write_blocking(|tx| {
//!     let p = tx.insert(&Polite { name: "Bob".into() })?;
//!     tx.install_powerup::<dyn Greeter, _>(p, 10)
//! }).unwrap();
//! let greetings = store.read_blocking(|r| -> mantissa_store::Result<_> {
//!     Ok(r.powerups::<dyn Greeter>()?.iter().map(|g| g.greet()).collect::<Vec<_>>())
//! }).unwrap();
//! assert_eq!(greetings, ["Good day, Bob."]);
//! ```

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Result, StoreError};
use crate::item::Item;
use crate::tx::{Read, Write};
use crate::value::{Ref, Value};

/// A trait that items can provide as powerups. Implement it for
/// `dyn YourTrait`, with a stable name.
pub trait Interface: 'static {
    /// The stable name, kept in stores.
    const NAME: &'static str;
}

/// Marks item type `Self` as a provider of interface `I`; written by
/// [`powerup!`](macro@crate::powerup).
pub trait Provides<I: ?Sized + Interface>: Item {}

type Loader = fn(&Read<'_>, i64) -> Result<Box<dyn Any>>;

/// Submitted by [`powerup!`](crate::powerup); not for hand use.
#[doc(hidden)]
pub struct PowerupRegistration {
    pub interface: &'static str,
    pub provider: &'static str,
    pub load: Loader,
}

inventory::collect!(PowerupRegistration);

/// Declares that items of type `$item` provide the interface `$iface` (a
/// `dyn Trait` that `$item` implements).
#[macro_export]
macro_rules! powerup {
    ($item:ty as $iface:ty) => {
        impl $crate::powerup::Provides<$iface> for $item {}
        $crate::__private::inventory::submit! {
            $crate::__private::PowerupRegistration {
                interface: <$iface as $crate::Interface>::NAME,
                provider: <$item as $crate::Item>::NAME,
                load: |r: &$crate::Read<'_>, id: i64| {
                    let item = r.get($crate::Ref::<$item>::from_id(id))?.into_inner();
                    let boxed: ::std::boxed::Box<$iface> = ::std::boxed::Box::new(item);
                    ::std::result::Result::Ok(::std::boxed::Box::new(boxed)
                        as ::std::boxed::Box<dyn ::std::any::Any>)
                },
            }
        }
    };
}

fn loaders() -> &'static HashMap<(&'static str, &'static str), Loader> {
    static LOADERS: OnceLock<HashMap<(&'static str, &'static str), Loader>> = OnceLock::new();
    LOADERS.get_or_init(|| {
        inventory::iter::<PowerupRegistration>
            .into_iter()
            .map(|r| ((r.interface, r.provider), r.load))
            .collect()
    })
}

/// The target of store-wide powerups.
const STORE: (&str, i64) = ("", 0);

impl Write<'_> {
    fn install(
        &mut self,
        interface: &str,
        target: (&str, i64),
        provider: (&'static str, i64),
        priority: i32,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO _powerups (interface, target_type, target_id, provider_type, provider_id, priority)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (interface, target_type, target_id, provider_type, provider_id)
             DO UPDATE SET priority = excluded.priority",
            &[
                Value::Text(interface.into()),
                Value::Text(target.0.into()),
                Value::Integer(target.1),
                Value::Text(provider.0.into()),
                Value::Integer(provider.1),
                Value::Integer(priority.into()),
            ],
        )?;
        Ok(())
    }

    /// Installs `provider` on the store as a provider of `I`. Higher
    /// priorities come first. Installing again changes the priority.
    pub fn install_powerup<I, P>(&mut self, provider: Ref<P>, priority: i32) -> Result<()>
    where
        I: ?Sized + Interface,
        P: Provides<I>,
    {
        self.get(provider)?;
        self.install(I::NAME, STORE, (P::NAME, provider.id()), priority)
    }

    /// Installs `provider` on the item `target` as a provider of `I`.
    pub fn install_powerup_on<I, P, T>(
        &mut self,
        target: Ref<T>,
        provider: Ref<P>,
        priority: i32,
    ) -> Result<()>
    where
        I: ?Sized + Interface,
        P: Provides<I>,
        T: Item,
    {
        self.get(target)?;
        self.get(provider)?;
        self.install(
            I::NAME,
            (T::NAME, target.id()),
            (P::NAME, provider.id()),
            priority,
        )
    }

    /// Removes `provider` as a provider of `I`, wherever it is installed.
    /// Returns whether it was installed.
    pub fn uninstall_powerup<I, P>(&mut self, provider: Ref<P>) -> Result<bool>
    where
        I: ?Sized + Interface,
        P: Provides<I>,
    {
        Ok(self.conn().execute(
            "DELETE FROM _powerups WHERE interface = ? AND provider_type = ? AND provider_id = ?",
            &[
                Value::Text(I::NAME.into()),
                Value::Text(P::NAME.into()),
                Value::Integer(provider.id()),
            ],
        )? > 0)
    }
}

impl Read<'_> {
    fn load_powerups<I: ?Sized + Interface>(&self, target: (&str, i64)) -> Result<Vec<Box<I>>> {
        let rows = self.conn().rows(
            "SELECT provider_type, provider_id FROM _powerups
             WHERE interface = ? AND target_type = ? AND target_id = ?
             ORDER BY priority DESC, id",
            &[
                Value::Text(I::NAME.into()),
                Value::Text(target.0.into()),
                Value::Integer(target.1),
            ],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut it = row.into_iter();
            let (Some(Value::Text(provider)), Some(Value::Integer(id))) = (it.next(), it.next())
            else {
                continue;
            };
            let Some(load) = loaders().get(&(I::NAME, provider.as_ref())) else {
                tracing::warn!(interface = I::NAME, provider = %provider, "powerup provider type is not linked into this program; skipped");
                continue;
            };
            let any = load(self, id)?;
            let boxed = any
                .downcast::<Box<I>>()
                .map_err(|_| StoreError::NotAPowerup {
                    provider: provider.to_string(),
                    id,
                    interface: I::NAME,
                })?;
            out.push(*boxed);
        }
        Ok(out)
    }

    /// Every provider of `I` installed on the store, highest priority first.
    pub fn powerups<I: ?Sized + Interface>(&self) -> Result<Vec<Box<I>>> {
        self.load_powerups(STORE)
    }

    /// Every provider of `I` installed on the item `target`.
    pub fn powerups_on<I: ?Sized + Interface, T: Item>(
        &self,
        target: Ref<T>,
    ) -> Result<Vec<Box<I>>> {
        self.load_powerups((T::NAME, target.id()))
    }
}
