//! Misuse of the store's own API fails at once, with an error that says
//! what to do, and never half-happens: a struct changed without a new
//! version, a blocking call inside the async runtime, a write nested in a
//! write of the same store, two writes waiting for each other, a panic in
//! the middle of a write.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};

use mantissa_store::*;

mod refused;
use refused::Refused;

/// A diary entry whose `mood` and `level` fields were added to the struct
/// without raising its version (the store's table has neither).
#[derive(Item, Debug)]
#[item(name = "t.mis.entry", version = 1)]
struct Entry {
    text: String,
    mood: String,
    level: i64,
}

#[derive(Item, Debug)]
#[item(name = "t.mis.note", version = 1)]
struct Note {
    n: i64,
}

fn site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    (dir, site)
}

/// A site on SQLite, for the tests that change a store's file behind its
/// back (or look into it) to stage what they check.
fn sqlite_site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    (dir, site)
}

fn notes(store: &Store) -> Vec<i64> {
    store
        .read_blocking(|r| r.query::<Note>().order_by(Note::n.asc()).column(Note::n))
        .unwrap()
}

/// Makes `path`'s entry table the one the struct had before `mood` and
/// `level` were added, with two entries in it — as the program before the
/// change made it and recorded it (`shape`); with `recorded` false, the
/// table changed behind the store's back.
fn table_of_the_old_struct(path: &Path, recorded: bool) {
    let c = rusqlite::Connection::open(path).unwrap();
    let old = r#"CREATE TABLE "item_t.mis.entry" (id INTEGER PRIMARY KEY AUTOINCREMENT, "text" TEXT NOT NULL) STRICT"#;
    c.execute_batch(&format!(
        r#"DROP TABLE "item_t.mis.entry";
           {old};
           INSERT INTO "item_t.mis.entry" ("text") VALUES ('first'), ('second');"#,
    ))
    .unwrap();
    if recorded {
        c.execute(
            "UPDATE _types SET shape = ? WHERE name = 't.mis.entry'",
            [old],
        )
        .unwrap();
    }
}

/// Before: every query returned the column's name as the field's value
/// ("mood": "mood"), and inserts failed with "no column named mood".
#[test]
fn a_struct_changed_without_a_new_version_is_refused_by_name() {
    struct_changed_without_a_new_version(true);
}

/// The same when the table was changed by hand behind the store's back
/// (its recorded shape still the type's): the first statement that finds a
/// column missing says so as plainly.
#[test]
fn a_table_changed_behind_the_store_s_back_is_refused_by_name() {
    struct_changed_without_a_new_version(false);
}

fn struct_changed_without_a_new_version(recorded: bool) {
    let (dir, site) = sqlite_site();
    let store = site.user_store("ann").unwrap();
    store
        .write_blocking(|tx| {
            tx.insert(&Entry {
                text: "made the table".into(),
                mood: "fine".into(),
                level: 1,
            })
        })
        .unwrap();
    let path = store.path().to_path_buf();
    site.close().unwrap();
    drop((store, site));
    table_of_the_old_struct(&path, recorded);

    let site = Site::open(dir.path()).unwrap();
    let store = site.user_store("ann").unwrap();
    let expected = format!(
        "{}: item type t.mis.entry does not match its table at version 1 (field \"mood\" has no column; field \"level\" has no column); raise its version and register an upgrader (upgrader!) from 1",
        path.display()
    );
    let read = store
        .read_blocking(|r| r.query::<Entry>().all())
        .unwrap_err();
    assert!(
        matches!(read, StoreError::SchemaMismatch(ref m) if m.item == "t.mis.entry"),
        "{read:?}"
    );
    assert_eq!(read.to_string(), expected);
    let write = store
        .write_blocking(|tx| {
            tx.insert(&Entry {
                text: "third".into(),
                mood: "grumpy".into(),
                level: 3,
            })
        })
        .unwrap_err();
    assert_eq!(write.to_string(), expected);
    // Counting and reading one column are refused as well: no part of a
    // mismatched type is read.
    let count = store
        .read_blocking(|r| r.query::<Entry>().count())
        .unwrap_err();
    assert_eq!(count.to_string(), expected);
    let texts = store
        .read_blocking(|r| r.query::<Entry>().column(Entry::text))
        .unwrap_err();
    assert_eq!(texts.to_string(), expected);
    // Async reads say the same.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let read = rt
        .block_on(store.read(|r| r.query::<Entry>().all()))
        .unwrap_err();
    assert_eq!(read.to_string(), expected);
    // The other types of the store are unaffected.
    store
        .write_blocking(|tx| tx.insert(&Note { n: 1 }))
        .unwrap();
    assert_eq!(notes(&store), [1]);
    site.close().unwrap();
    drop((store, site));

    // Nothing was written to the mismatched table.
    let c = rusqlite::Connection::open(&path).unwrap();
    let texts: Vec<String> = c
        .prepare(r#"SELECT "text" FROM "item_t.mis.entry" ORDER BY id"#)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(texts, ["first", "second"]);
}

/// A type no store item was ever written of has no table: reading it
/// gives nothing, the first write makes it.
#[test]
fn a_type_gets_its_table_with_its_first_item() {
    let (_dir, site) = sqlite_site();
    let store = site.user_store("cy").unwrap();
    assert!(notes(&store).is_empty());
    let has_table = |store: &Store| {
        let c = rusqlite::Connection::open(store.path()).unwrap();
        c.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'item_t.mis.note'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    };
    assert!(!has_table(&store));
    // A write that fails after making the table leaves none behind, and
    // the next one makes it again.
    let err = store
        .write_blocking(|tx| {
            tx.insert(&Note { n: 1 })?;
            Err::<(), _>(Refused::Because("no, after all"))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "no, after all");
    assert!(!has_table(&store));
    assert!(notes(&store).is_empty());
    store
        .write_blocking(|tx| {
            let _ = tx.savepoint(|tx| {
                tx.insert(&Note { n: 2 })?;
                Err::<(), _>(Refused::Because("not this part"))
            });
            tx.insert(&Note { n: 3 })
        })
        .unwrap();
    assert!(has_table(&store));
    assert_eq!(notes(&store), [3]);
}

/// Before: `write_blocking` inside the runtime panicked after handing the
/// write over, and the write committed anyway.
#[test]
fn blocking_calls_inside_the_async_runtime_are_refused_before_anything_happens() {
    let (_dir, site) = site();
    let store = site.user_store("dee").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (write, read, run_due, check) = rt.block_on(async {
        (
            store
                .write_blocking(|tx| tx.insert(&Note { n: 1 }))
                .unwrap_err(),
            store
                .read_blocking(|r| r.query::<Note>().count())
                .unwrap_err(),
            site.run_due(Timestamp::now()).unwrap_err(),
            store.close().unwrap_err(),
        )
    });
    assert!(
        matches!(write, StoreError::BlockingInAsync { .. }),
        "{write:?}"
    );
    assert_eq!(
        write.to_string(),
        "Store::write_blocking blocks, and was called on an async runtime thread, where it would stop every task on that thread; use Store::write(..).await (or call it inside tokio::task::spawn_blocking)"
    );
    assert_eq!(
        read.to_string(),
        "Store::read_blocking blocks, and was called on an async runtime thread, where it would stop every task on that thread; use Store::read(..).await (or call it inside tokio::task::spawn_blocking)"
    );
    assert!(
        matches!(run_due, StoreError::BlockingInAsync { .. }),
        "{run_due:?}"
    );
    assert!(
        matches!(check, StoreError::BlockingInAsync { .. }),
        "{check:?}"
    );
    assert!(!store.is_closed());
    // Nothing was written.
    assert!(notes(&store).is_empty());

    // On a multi-threaded runtime's worker too.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let s = store.clone();
    let err = multi
        .block_on(async move {
            tokio::spawn(async move { s.write_blocking(|tx| tx.insert(&Note { n: 2 })) })
                .await
                .unwrap()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::BlockingInAsync { .. }), "{err:?}");
    assert!(notes(&store).is_empty());

    // Where blocking is allowed (spawn_blocking) they work, and so do the
    // async ones.
    let s = store.clone();
    rt.block_on(async move {
        let s2 = s.clone();
        tokio::task::spawn_blocking(move || s2.write_blocking(|tx| tx.insert(&Note { n: 3 })))
            .await
            .unwrap()
            .unwrap();
        s.write(|tx| tx.insert(&Note { n: 4 })).await.unwrap();
    });
    assert_eq!(notes(&store), [3, 4]);
}

/// Polls a future once, outside any runtime.
fn poll_once<F: std::future::Future>(f: F) -> Poll<F::Output> {
    let mut f = std::pin::pin!(f);
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Before: a `write_blocking` of store S inside a write of S never
/// returned, and every write of S hung from then on.
#[test]
fn a_write_nested_in_a_write_of_the_same_store_fails_at_once() {
    let (_dir, site) = site();
    let store = site.user_store("eve").unwrap();
    let (inner, inner_async) = store
        .write_blocking(|tx| -> Result<_> {
            tx.insert(&Note { n: 1 })?;
            let inner = store
                .write_blocking(|tx| tx.insert(&Note { n: 2 }))
                .unwrap_err();
            let inner_async = match poll_once(store.write(|tx| tx.insert(&Note { n: 3 }))) {
                Poll::Ready(r) => r.unwrap_err(),
                Poll::Pending => panic!("a nested async write waits"),
            };
            Ok((inner, inner_async))
        })
        .unwrap();
    assert!(matches!(inner, StoreError::NestedWrite { ref store } if store == "eve"));
    assert_eq!(
        inner.to_string(),
        "a write of store \"eve\" was started inside a write of the same store, where it would wait for itself for ever; do all of it in the one transaction (the Write you were given), or write after it returns"
    );
    assert!(matches!(inner_async, StoreError::NestedWrite { .. }));
    // The outer write committed; neither nested one happened; the store
    // goes on taking writes.
    assert_eq!(notes(&store), [1]);
    store
        .write_blocking(|tx| tx.insert(&Note { n: 4 }))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.write(|tx| tx.insert(&Note { n: 5 })))
        .unwrap();
    assert_eq!(notes(&store), [1, 4, 5]);
}

/// Two threads each writing one store and then, inside that write, the
/// other's: one of them is refused at once (instead of both waiting for
/// ever), and the other then goes on.
#[test]
fn two_writes_waiting_for_each_other_are_refused_not_hung() {
    let (_dir, site) = site();
    let a = site.user_store("a").unwrap();
    let b = site.user_store("b").unwrap();
    let both_hold = Arc::new(Barrier::new(2));
    let cross = |first: Store, second: Store, both_hold: Arc<Barrier>| {
        std::thread::spawn(move || {
            first.write_blocking(|tx| -> Result<_> {
                tx.insert(&Note { n: 1 })?;
                both_hold.wait();
                // Give the other thread time to start waiting too, then
                // wait for its store.
                std::thread::sleep(std::time::Duration::from_millis(100));
                Ok(second.write_blocking(|tx| tx.insert(&Note { n: 2 })))
            })
        })
    };
    let t1 = cross(a.clone(), b.clone(), both_hold.clone());
    let t2 = cross(b.clone(), a.clone(), both_hold);
    let r1 = t1.join().unwrap().unwrap();
    let r2 = t2.join().unwrap().unwrap();
    let refused: Vec<&StoreError> = [&r1, &r2]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert_eq!(refused.len(), 1, "{r1:?} {r2:?}");
    assert!(
        matches!(refused[0], StoreError::Deadlock { .. }),
        "{:?}",
        refused[0]
    );
    assert!(
        refused[0].to_string().contains("would wait for ever"),
        "{}",
        refused[0]
    );
    // One store has both notes, the other only its own; both take writes.
    let mut counts = [notes(&a).len(), notes(&b).len()];
    counts.sort();
    assert_eq!(counts, [1, 2]);
    a.write_blocking(|tx| tx.insert(&Note { n: 9 })).unwrap();
    b.write_blocking(|tx| tx.insert(&Note { n: 9 })).unwrap();
}

/// A write that panics, blocking or async, rolls back, and the store
/// goes on (its lock is released, its connection not left in the
/// transaction).
#[test]
fn a_panic_in_a_write_rolls_it_back_and_the_store_goes_on() {
    let (_dir, site) = site();
    let store = site.user_store("fay").unwrap();
    let err = store
        .write_blocking(|tx| -> Result<()> {
            tx.insert(&Note { n: 1 })?;
            panic!("oops")
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "transaction panicked and was rolled back: oops"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = rt
        .block_on(store.write(|tx| -> Result<()> {
            tx.insert(&Note { n: 2 })?;
            panic!("async oops")
        }))
        .unwrap_err();
    assert!(matches!(err, StoreError::Panicked(_)), "{err:?}");
    // A panic in a write of another store made inside this one's write.
    let other = site.user_store("gus").unwrap();
    let err = store
        .write_blocking(|tx| {
            tx.insert(&Note { n: 3 })?;
            other.write_blocking(|_| -> Result<()> { panic!("inner") })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Panicked(_)), "{err:?}");
    assert!(notes(&store).is_empty());
    store
        .write_blocking(|tx| tx.insert(&Note { n: 4 }))
        .unwrap();
    other
        .write_blocking(|tx| tx.insert(&Note { n: 5 }))
        .unwrap();
    rt.block_on(store.write(|tx| tx.insert(&Note { n: 6 })))
        .unwrap();
    assert_eq!(notes(&store), [4, 6]);
    assert_eq!(notes(&other), [5]);
}

/// Blocking writes and reads may borrow what they use.
#[test]
fn blocking_writes_and_reads_borrow() {
    let (_dir, site) = site();
    let store = site.user_store("hal").unwrap();
    let wanted = vec![3, 1, 2];
    let mut seen = Vec::new();
    store
        .write_blocking(|tx| -> Result<_> {
            for &n in &wanted {
                tx.insert(&Note { n })?;
            }
            Ok(())
        })
        .unwrap();
    store
        .read_blocking(|r| -> Result<_> {
            seen.extend(r.query::<Note>().column(Note::n)?);
            Ok(())
        })
        .unwrap();
    seen.sort();
    assert_eq!(wanted.len(), 3);
    assert_eq!(seen, [1, 2, 3]);
}

/// A write of another store made from inside an async write (so on a
/// write pool thread) runs there and then: with every pool thread doing
/// it at once, none waits for a pool thread that never comes.
#[test]
fn writes_made_inside_pool_writes_never_wait_for_the_pool() {
    let (_dir, site) = site();
    let side = site.user_store("side").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let n = 64;
    rt.block_on(async {
        let mut writes = Vec::new();
        for i in 0..n {
            let store = site.user_store(&format!("pool{i}")).unwrap();
            let side = side.clone();
            writes.push(tokio::spawn(async move {
                store
                    .write(move |tx| {
                        tx.insert(&Note { n: i })?;
                        // Held for a while, so that every pool thread is
                        // inside such a write at once.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        match poll_once(side.write(move |tx| tx.insert(&Note { n: 1000 + i }))) {
                            Poll::Ready(r) => Ok(r.map(drop)?),
                            Poll::Pending => Err(Refused::Because("waited for the pool")),
                        }
                    })
                    .await
            }));
        }
        for w in writes {
            w.await.unwrap().unwrap();
        }
    });
    assert_eq!(notes(&side).len(), n as usize);
}

/// An upgrader that panics fails the upgrade with an error naming the item,
/// and the store is left as it was.
#[derive(Item, Debug)]
#[item(name = "t.mis.panicky", version = 2)]
struct Panicky {
    n: i64,
}

upgrader!(Panicky, 1, |_item| panic!("upgrader bug"));

#[test]
fn an_upgrader_that_panics_fails_the_upgrade_and_changes_nothing() {
    let (dir, site) = sqlite_site();
    let store = site.user_store("ivy").unwrap();
    store
        .write_blocking(|tx| tx.insert(&Panicky { n: 1 }))
        .unwrap();
    let path = store.path().to_path_buf();
    site.close().unwrap();
    drop((store, site));
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE _types SET version = 1 WHERE name = 't.mis.panicky'",
        [],
    )
    .unwrap();
    drop(c);
    let site = Site::open(dir.path()).unwrap();
    let err = site.user_store("ivy").unwrap_err();
    assert!(
        matches!(err, StoreError::UpgradeFailed { ref item, ref reason, .. }
            if item == "t.mis.panicky" && reason.contains("upgrader bug")),
        "{err:?}"
    );
    // Still at version 1, with its item: the upgrade rolled back whole.
    let c = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = c
        .query_row(
            "SELECT version FROM _types WHERE name = 't.mis.panicky'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 1);
    let n: i64 = c
        .query_row(r#"SELECT COUNT(*) FROM "item_t.mis.panicky""#, [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1);
}
