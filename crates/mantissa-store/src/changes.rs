//! Announcing what each write changed: which store, and which item types,
//! to whoever subscribed ([`Site::changes`]), so that a page showing those
//! items can be brought up to date whatever wrote them (a request, a job,
//! mail arriving) and on whichever node.
//!
//! On SQLite a site is one process: a write's change is sent to the site's
//! subscribers when it has committed. On PostgreSQL every node of the site
//! must hear it: a write announces its change with `pg_notify` in the same
//! round trip as its `COMMIT` (PostgreSQL delivers it when, and only if,
//! the transaction commits), and each node listens on a connection of its
//! own and passes what it hears to its subscribers — its own writes'
//! changes included, so that each change arrives once, by one path.
//!
//! A change says what changed, not how: a subscriber reads again what it
//! shows. Announcements are not kept: a subscriber that falls behind
//! (`broadcast`'s `Lagged`) or a node whose listening connection was
//! broken and made again may have missed some, and should read everything
//! it shows again.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::site::Site;

/// A change committed to one store: the item types its write inserted,
/// updated or deleted (with those a delete may have reached by cascade).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The store's name: "site", or the user's.
    pub store: String,
    /// The stable names of the item types, sorted.
    pub item_types: Vec<String>,
}

/// Changes not yet taken by the slowest subscriber, at most.
const BACKLOG: usize = 1024;

/// Where a site's changes go.
pub(crate) type Announcer = Arc<broadcast::Sender<Change>>;

pub(crate) fn announcer() -> Announcer {
    Arc::new(broadcast::channel(BACKLOG).0)
}

/// The channel PostgreSQL carries a site's changes on.
pub(crate) const CHANNEL: &str = "mantissa_changes";

impl Change {
    /// The change as a notification's payload: the store, a tab, and the
    /// item types separated by tabs (names hold no tabs).
    pub(crate) fn payload(&self) -> String {
        let mut p = self.store.clone();
        for t in &self.item_types {
            p.push('\t');
            p.push_str(t);
        }
        p
    }

    /// The payload that says store `name`, whose id was `id`, was deleted:
    /// `-`, the name, a tab and the id (a store's name never starts with
    /// `-`). Nodes close what they have open of it (`Site::open_postgres`).
    pub(crate) fn deleted_payload(name: &str, id: i64) -> String {
        format!("-{name}\t{id}")
    }

    /// The store and id a [`Change::deleted_payload`] names.
    pub(crate) fn deleted_from_payload(payload: &str) -> Option<(String, i64)> {
        let (name, id) = payload.strip_prefix('-')?.split_once('\t')?;
        Some((name.to_string(), id.parse().ok()?))
    }

    /// A change read back from [`Change::payload`].
    pub(crate) fn from_payload(payload: &str) -> Option<Change> {
        if payload.starts_with('-') {
            return None;
        }
        let mut parts = payload.split('\t');
        let store = parts.next().filter(|s| !s.is_empty())?.to_string();
        Some(Change {
            store,
            item_types: parts.map(str::to_string).collect(),
        })
    }
}

impl Site {
    /// The changes committed to the site's stores from now on: in this
    /// process, and on a site in PostgreSQL on every node serving it.
    ///
    /// ```
    /// # use mantissa_store::*;
    /// # #[derive(Item)] #[item(name = "doc.changes.note", version = 1)] struct Note { text: String }
    /// # let dir = tempfile::tempdir().unwrap();
    /// let site = Site::open(dir.path())?;
    /// let mut changes = site.changes();
    /// site.user_store("ann")?.write_blocking(|tx| tx.insert(&Note { text: "hi".into() }))?;
    /// let change = changes.try_recv().unwrap();
    /// assert_eq!(change.store, "ann");
    /// assert_eq!(change.item_types, ["doc.changes.note"]);
    /// # Ok::<(), StoreError>(())
    /// ```
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.announcer().subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn a_change_survives_its_payload() {
        let c = Change {
            store: "ann".into(),
            item_types: vec!["a.b".into(), "c.d".into()],
        };
        assert_eq!(Change::from_payload(&c.payload()), Some(c));
        assert_eq!(Change::from_payload(""), None);
        let deleted = Change::deleted_payload("ann", 42);
        assert_eq!(Change::from_payload(&deleted), None);
        assert_eq!(
            Change::deleted_from_payload(&deleted),
            Some(("ann".into(), 42))
        );
    }
}
