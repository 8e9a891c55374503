//! Stores over time: closed, deleted and made again under the same name,
//! exported and brought back — and at rest, one file each.

use std::path::Path;

use mantissa_store::*;
use serde::{Deserialize, Serialize};

#[derive(Item, Debug)]
#[item(name = "t.life.note", version = 1)]
struct Note {
    text: String,
}

/// What a greeting brought, in the receiver's store.
#[derive(Item, Debug)]
#[item(name = "t.life.greeting", version = 1)]
struct Greeting {
    from: String,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Hello {
    text: String,
}

/// The texts of the greetings received, over every test of this file,
/// which run at once: each test uses texts of its own, and counts those.
static RECEIVED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// How many greetings with `text` were received.
fn received(text: &str) -> usize {
    RECEIVED
        .lock()
        .unwrap()
        .iter()
        .filter(|t| *t == text)
        .count()
}

impl Message for Hello {
    const NAME: &'static str = "t.life.hello";
    type Answer = String;
    type Error = StoreError;
    fn receive(self, tx: &mut Write<'_>, from: &str) -> Result<String> {
        RECEIVED.lock().unwrap().push(self.text.clone());
        tx.insert(&Greeting {
            from: from.into(),
            text: self.text.clone(),
        })?;
        Ok(format!("got {}", self.text))
    }
}
message!(Hello);

fn site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    (dir, site)
}

fn texts(store: &Store) -> Vec<String> {
    store
        .read_blocking(|r| r.query::<Note>().column(Note::text))
        .unwrap()
}

fn greetings(store: &Store) -> Vec<String> {
    store
        .read_blocking(|r| r.query::<Greeting>().column(Greeting::text))
        .unwrap()
}

/// Sends `text` from `from` to bob, delivers it, and returns the answer.
fn hello(site: &Site, from: &Store, text: &str) -> Option<String> {
    let text = text.to_string();
    let id = from
        .write_blocking(|tx| tx.send_message("bob", &Hello { text }))
        .unwrap();
    site.run_due(Timestamp::now()).unwrap();
    from.read_blocking(|r| r.message_answer::<Hello>(id))
        .unwrap()
}

/// Before: bob remembered messages by (sender's name, number); a new
/// alice numbered hers from 1 again, and bob took each for one he had:
/// never received, answered with the old answer.
#[test]
fn a_store_deleted_and_made_again_is_a_new_sender() {
    // On either engine: a store's identity is its own on both.
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    let bob = site.user_store("bob").unwrap();
    let alice = site.user_store("alice").unwrap();
    assert_eq!(
        hello(&site, &alice, "first alice").as_deref(),
        Some("got first alice")
    );
    drop(alice);
    site.delete_user_store("alice").unwrap();
    let alice = site.user_store("alice").unwrap();
    assert_eq!(
        hello(&site, &alice, "second alice").as_deref(),
        Some("got second alice")
    );
    assert_eq!(greetings(&bob), ["first alice", "second alice"]);
}

/// A store brought back from an export is a new sender too: the messages
/// it sends under numbers it used before the export are received.
#[test]
fn a_store_brought_back_from_an_export_is_a_new_sender() {
    let (dir, site) = site();
    let bob = site.user_store("bob").unwrap();
    let carl = site.user_store("carl").unwrap();
    let export = dir.path().join("carl.export");
    site.export_user("carl", &export).unwrap();
    assert_eq!(
        hello(&site, &carl, "after export").as_deref(),
        Some("got after export")
    );
    drop(carl);
    site.delete_user_store("carl").unwrap();
    let carl = site.import_user("carl", &export).unwrap();
    assert_eq!(
        hello(&site, &carl, "after import").as_deref(),
        Some("got after import")
    );
    assert_eq!(greetings(&bob), ["after export", "after import"]);
}

/// A store written by the previous format, whose message the receiver
/// recorded by the sender's name just before a crash: once both are
/// opened by this program the delivery is still recognised.
#[test]
fn messages_sent_before_stores_had_identities_are_still_received_once() {
    let (dir, site) = site();
    let bob = site.user_store("bob").unwrap();
    let dora = site.user_store("dora").unwrap();
    let id = dora
        .write_blocking(|tx| {
            tx.send_message(
                "bob",
                &Hello {
                    text: "from the old days".into(),
                },
            )
        })
        .unwrap();
    site.run_due(Timestamp::now()).unwrap();
    assert_eq!(received("from the old days"), 1);
    let (bob_path, dora_path) = (bob.path().to_path_buf(), dora.path().to_path_buf());
    site.close().unwrap();
    drop((bob, dora, site));
    // Both stores as format 1 wrote them (with every table of the store's
    // own), with dora's answer lost in a crash.
    let to_format_1 = |path: &Path| {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS _outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL,
                 kind TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, answer TEXT,
                 attempts INTEGER NOT NULL DEFAULT 0, next_try INTEGER NOT NULL, last_error TEXT) STRICT;
             CREATE TABLE IF NOT EXISTS _inbox (sender_id TEXT NOT NULL, message_id INTEGER NOT NULL,
                 answer TEXT NOT NULL, PRIMARY KEY (sender_id, message_id)) STRICT;
             ALTER TABLE _types DROP COLUMN shape;
             DELETE FROM _meta WHERE key = 'id';
             UPDATE _meta SET value = 1 WHERE key = 'format';
             CREATE TABLE _inbox_v1 (sender TEXT NOT NULL, message_id INTEGER NOT NULL,
                 answer TEXT NOT NULL, PRIMARY KEY (sender, message_id)) STRICT;
             INSERT INTO _inbox_v1 SELECT 'dora', message_id, answer FROM _inbox;
             DROP TABLE _inbox;
             ALTER TABLE _inbox_v1 RENAME TO _inbox;",
        )
        .unwrap();
    };
    to_format_1(&bob_path);
    to_format_1(&dora_path);
    let c = rusqlite::Connection::open(&dora_path).unwrap();
    c.execute(
        "UPDATE _outbox SET state = 'pending', answer = NULL WHERE id = ?",
        [id.0],
    )
    .unwrap();
    drop(c);
    let c = rusqlite::Connection::open(dir.path().join("site.sqlite")).unwrap();
    c.execute(
        "INSERT OR REPLACE INTO _due_stores (store, due) VALUES ('dora', 0)",
        [],
    )
    .unwrap();
    drop(c);

    let site = Site::open(dir.path()).unwrap();
    let dora = site.user_store("dora").unwrap();
    let bob = site.user_store("bob").unwrap();
    site.run_due(Timestamp::now()).unwrap();
    assert_eq!(received("from the old days"), 1, "not received twice");
    assert_eq!(greetings(&bob), ["from the old days"]);
    let answer = dora
        .read_blocking(|r| r.message_answer::<Hello>(id))
        .unwrap();
    assert_eq!(answer.as_deref(), Some("got from the old days"));
    // And new messages from dora, numbered after the old ones, arrive.
    assert_eq!(
        hello(&site, &dora, "new days").as_deref(),
        Some("got new days")
    );
}

/// Before: deleting a user's store while a handle to it was held left the
/// handle writing to a file no one would read again; the name, made again,
/// was a different store, silently.
#[test]
fn a_deleted_store_refuses_its_old_handles_and_its_name_starts_afresh() {
    let (_dir, site) = site();
    let old = site.user_store("erin").unwrap();
    old.write_blocking(|tx| tx.insert(&Note { text: "old".into() }))
        .unwrap();
    site.delete_user_store("erin").unwrap();
    let err = old
        .write_blocking(|tx| {
            tx.insert(&Note {
                text: "lost?".into(),
            })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    assert!(matches!(
        old.read_blocking(|r| r.query::<Note>().count()),
        Err(StoreError::Closed)
    ));
    let new = site.user_store("erin").unwrap();
    assert!(texts(&new).is_empty());
    new.write_blocking(|tx| tx.insert(&Note { text: "new".into() }))
        .unwrap();
    assert_eq!(texts(&new), ["new"]);
    assert!(old.is_closed() && !new.is_closed());
}

/// One user store can be closed: its handles fail from then on, and the
/// next use opens it again, with everything in it.
#[test]
fn one_user_store_can_be_closed_and_opened_again() {
    let (_dir, site) = site();
    let s = site.user_store("finn").unwrap();
    s.write_blocking(|tx| {
        tx.insert(&Note {
            text: "kept".into(),
        })
    })
    .unwrap();
    assert!(site.close_user_store("finn").unwrap());
    assert!(!site.close_user_store("finn").unwrap(), "already closed");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = rt
        .block_on(s.write(|tx| {
            tx.insert(&Note {
                text: "late".into(),
            })
        }))
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    assert!(matches!(
        rt.block_on(s.read(|r| r.query::<Note>().count())),
        Err(StoreError::Closed)
    ));
    let again = site.user_store("finn").unwrap();
    assert_eq!(texts(&again), ["kept"]);
}

/// What a copy of `path` alone (without its `-wal`) holds.
fn texts_in_a_copy_of(path: &Path) -> Vec<String> {
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("copy.sqlite");
    std::fs::copy(path, &file).unwrap();
    let c = rusqlite::Connection::open(&file).unwrap();
    c.prepare(r#"SELECT "text" FROM "item_t.life.note" ORDER BY id"#)
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .unwrap_or_default()
}

fn wal_len(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Before: after a shutdown most of a store sat in its `-wal` file, and a
/// copy of the store's file was an empty store.
#[test]
fn a_closed_site_keeps_each_store_in_its_one_file() {
    let (_dir, site) = site();
    let s = site.user_store("gil").unwrap();
    for i in 0..20 {
        s.write_blocking(|tx| {
            tx.insert(&Note {
                text: format!("note {i}"),
            })
        })
        .unwrap();
    }
    let path = s.path().to_path_buf();
    assert!(wal_len(&path) > 0, "the writes are in the log first");
    site.close().unwrap();
    assert_eq!(wal_len(&path), 0);
    assert_eq!(texts_in_a_copy_of(&path).len(), 20);
    // The site store too.
    assert_eq!(wal_len(&site.root().join("site.sqlite")), 0);
    assert!(matches!(
        site.user_store("gil").unwrap_err(),
        StoreError::Closed
    ));
}

/// A store that leaves the cache of open stores is folded back into its
/// file, whether it closes or is still held elsewhere.
#[test]
fn a_store_leaving_the_cache_is_folded_into_its_file() {
    let (_dir, site) = site();
    site.set_open_stores(1);
    let held = site.user_store("hana").unwrap();
    held.write_blocking(|tx| {
        tx.insert(&Note {
            text: "held".into(),
        })
    })
    .unwrap();
    let dropped_path = {
        let s = site.user_store("ivan").unwrap();
        s.write_blocking(|tx| {
            tx.insert(&Note {
                text: "dropped".into(),
            })
        })
        .unwrap();
        s.path().to_path_buf()
    };
    // Pushes ivan out (closed: no one holds it).
    site.user_store("jo").unwrap();
    assert_eq!(wal_len(&dropped_path), 0);
    assert_eq!(texts_in_a_copy_of(&dropped_path), ["dropped"]);
    // hana was pushed out by ivan while held: folded back by the write
    // pool, soon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal_len(held.path()) > 0 {
        assert!(std::time::Instant::now() < deadline, "never folded back");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(texts_in_a_copy_of(held.path()), ["held"]);
    assert_eq!(texts(&held), ["held"]);
}

/// A store with nothing in it is a few pages, not a table per item type
/// linked into the program.
#[test]
fn an_empty_user_store_is_small() {
    let (_dir, site) = site();
    let s = site.user_store("kim").unwrap();
    let path = s.path().to_path_buf();
    site.close().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    // The first page (SQLite's own schema), `_meta` and `_types`.
    assert!(len <= 3 * 4096, "an empty store is {len} bytes");
}

/// The site's disk usage counts its stores (database, log, attached
/// files) and nothing else in its folder.
#[test]
fn disk_usage_counts_the_stores_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path().join("site")).unwrap();
    let empty = site.disk_usage().unwrap();
    assert!(empty > 0, "the site store");
    let alice = site.user_store("alice").unwrap();
    alice
        .write_blocking(|tx| -> Result<_> {
            for i in 0..200 {
                tx.insert(&Note {
                    text: format!("note {i} {}", "x".repeat(200)),
                })?;
            }
            Ok(())
        })
        .unwrap();
    let with_alice = site.disk_usage().unwrap();
    assert!(with_alice > empty + 40_000, "{empty} then {with_alice}");
    // A megabyte that is not a store (a checkout's build folder, say).
    std::fs::create_dir(dir.path().join("site/target")).unwrap();
    std::fs::write(dir.path().join("site/target/big"), vec![0u8; 1 << 20]).unwrap();
    assert_eq!(site.disk_usage().unwrap(), with_alice);
}
