//! A site on PostgreSQL as several processes ("nodes") share it: one
//! database, the same stores, each store's writes one at a time across
//! all of them, and stores kept apart.

use mantissa_store::testing::postgres_database;
use mantissa_store::*;

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.counter", version = 1)]
struct Counter {
    #[item(unique)]
    name: String,
    value: i64,
}

fn node(url: &str) -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open_postgres(dir.path(), url).unwrap();
    (dir, site)
}

fn value(store: &Store) -> Option<i64> {
    store
        .read_blocking(|r| {
            r.query::<Counter>()
                .filter(Counter::name.eq("hits"))
                .first()
        })
        .unwrap()
        .map(|c| c.value)
}

/// Two nodes add one to the same counter of the same store, each from two
/// threads: every read-modify-write sees the one before it, on whichever
/// node it ran, so none is lost.
#[test]
fn writes_to_one_store_from_two_nodes_run_one_at_a_time() {
    let url = postgres_database();
    let (_a, node_a) = node(&url);
    let (_b, node_b) = node(&url);
    node_a
        .user_store("shared")
        .unwrap()
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "hits".into(),
                value: 0,
            })
        })
        .unwrap();
    const EACH: i64 = 25;
    let threads: Vec<_> = [&node_a, &node_b, &node_a, &node_b]
        .into_iter()
        .map(|site| {
            let store = site.user_store("shared").unwrap();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    store
                        .write_blocking(|tx| -> Result<()> {
                            let mut c = tx
                                .query::<Counter>()
                                .filter(Counter::name.eq("hits"))
                                .first()?
                                .expect("the counter");
                            c.value += 1;
                            tx.update(&c)
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(value(&node_a.user_store("shared").unwrap()), Some(4 * EACH));
    assert_eq!(value(&node_b.user_store("shared").unwrap()), Some(4 * EACH));
    assert_eq!(node_b.user_names().unwrap(), vec!["shared".to_string()]);
}

/// Stores share tables and never see each other's rows; a store deleted
/// on one node and made again under its name is a new, empty store on
/// every node, and a handle to the old one fails.
#[test]
fn stores_are_apart_and_a_name_made_again_is_a_new_store() {
    let url = postgres_database();
    let (_a, node_a) = node(&url);
    let (_b, node_b) = node(&url);
    let ann = node_a.user_store("ann").unwrap();
    ann.write_blocking(|tx| {
        tx.insert(&Counter {
            name: "hits".into(),
            value: 7,
        })
    })
    .unwrap();
    // The same unique name in another store is no conflict, and neither
    // store sees the other's.
    let bob = node_b.user_store("bob").unwrap();
    bob.write_blocking(|tx| {
        tx.insert(&Counter {
            name: "hits".into(),
            value: 1,
        })
    })
    .unwrap();
    assert_eq!(value(&bob), Some(1));
    assert_eq!(value(&node_b.user_store("ann").unwrap()), Some(7));
    let err = ann
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "hits".into(),
                value: 8,
            })
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another item already has this t.pg.counter.name"),
        "{err}"
    );

    node_a.delete_user_store("ann").unwrap();
    assert!(!node_b.has_user_store("ann").unwrap());
    assert!(matches!(
        ann.read_blocking(|r| r.query::<Counter>().count()),
        Err(StoreError::Closed)
    ));
    let again = node_a.user_store("ann").unwrap();
    assert_eq!(
        value(&again),
        None,
        "a new store under an old name is empty"
    );
    assert_eq!(value(&bob), Some(1), "another store lost nothing");
    assert_eq!(
        node_b.user_names().unwrap(),
        vec!["ann".to_string(), "bob".to_string()]
    );
}

/// A site in PostgreSQL is backed up as a site in SQLite files, and a
/// user's store is exported as one file and imported back (under another
/// name, as a new store), attached files included.
#[test]
fn a_site_in_postgres_is_backed_up_and_its_users_exported_as_files() {
    let url = postgres_database();
    let (dir, site) = node(&url);
    let up = site
        .user_store("ann")
        .unwrap()
        .write_blocking(|tx| -> Result<_> {
            tx.insert(&Counter {
                name: "hits".into(),
                value: 5,
            })?;
            let up = tx.insert(&Upload {
                title: "photo".into(),
            })?;
            tx.attach_file(up, "photo.jpg", b"the bytes")?;
            Ok(up)
        })
        .unwrap();

    let dest = dir.path().join("backup");
    let mut stores = Vec::new();
    site.backup(&dest, |_, _, name| stores.push(name.to_string()))
        .unwrap();
    assert_eq!(stores, ["site", "ann"]);
    let copy = Site::open_existing(&dest).unwrap();
    let ann = copy.user_store("ann").unwrap();
    assert_eq!(value(&ann), Some(5));
    assert_eq!(
        ann.read_blocking(move |r| r.file(up, "photo.jpg"))
            .unwrap()
            .as_deref(),
        Some(&b"the bytes"[..])
    );
    assert!(ann.check().unwrap().is_empty());
    assert!(dest.join("users/ann.sqlite").is_file());

    let file = dir.path().join("ann.export");
    site.export_user("ann", &file).unwrap();
    assert!(file.is_file());
    let bea = site.import_user("bea", &file).unwrap();
    assert_eq!(value(&bea), Some(5));
    assert_eq!(
        bea.read_blocking(move |r| r.file(up, "photo.jpg"))
            .unwrap()
            .as_deref(),
        Some(&b"the bytes"[..])
    );
    // Imported, it is a store of its own: ann's is unchanged by bea's writes.
    bea.write_blocking(|tx| -> Result<()> {
        let mut c = tx.query::<Counter>().first()?.unwrap();
        c.value = 6;
        tx.update(&c)
    })
    .unwrap();
    assert_eq!(value(&site.user_store("ann").unwrap()), Some(5));
    let again = site.import_user("bea", &file).unwrap_err().to_string();
    assert!(again.contains("already has a store"), "{again}");
    assert!(
        site.backup(&dest, |_, _, _| {}).is_err(),
        "never overwrites"
    );
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.job", version = 1)]
struct Job {
    runs: i64,
    /// How long it takes inside its write: long enough, and a node killed
    /// at a random moment is often killed in the middle of one.
    millis: i64,
}

impl Scheduled for Job {
    type Error = StoreError;
    fn run(mut me: Stored<Self>, tx: &mut Write<'_>, _now: Timestamp) -> Result<Option<Timestamp>> {
        me.runs += 1;
        tx.update(&me)?;
        std::thread::sleep(std::time::Duration::from_millis(me.millis as u64));
        Ok(None)
    }
}
scheduled!(Job);

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.task", version = 1)]
struct Task {
    n: i64,
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.done", version = 1)]
struct Done {
    /// Unique: a task processed twice would be refused here, and show as
    /// a failure of the listener.
    #[item(unique)]
    task: i64,
}

struct Worker;

impl Listener for Worker {
    type Item = Task;
    const NAME: &'static str = "t.pg.worker";
    type Error = StoreError;
    fn process(task: Stored<Task>, tx: &mut Write<'_>) -> Result<()> {
        tx.insert(&Done { task: task.n })?;
        Ok(())
    }
}
listener!(Worker);

/// Scheduled work and the work queue of one store, run by two nodes at
/// once (two threads each): every job runs once, and every task is
/// processed once, whichever node gets to it.
#[test]
fn due_work_run_by_two_nodes_at_once_runs_once() {
    const JOBS: i64 = 30;
    let url = postgres_database();
    let (_a, node_a) = node(&url);
    let (_b, node_b) = node(&url);
    let t0 = Timestamp::now();
    node_a
        .user_store("work")
        .unwrap()
        .write_blocking(|tx| -> Result<()> {
            for n in 0..JOBS {
                let job = tx.insert(&Job { runs: 0, millis: 0 })?;
                tx.schedule(job, t0)?;
                tx.insert(&Task { n })?;
            }
            Ok(())
        })
        .unwrap();
    let threads: Vec<_> = [&node_a, &node_b, &node_a, &node_b]
        .into_iter()
        .map(|site| {
            let site = site.clone();
            std::thread::spawn(move || site.run_due(t0.plus(std::time::Duration::from_secs(1))))
        })
        .collect();
    let mut scheduled = 0;
    let mut processed = 0;
    for t in threads {
        let report = t.join().unwrap().unwrap();
        scheduled += report.scheduled;
        processed += report.processed;
    }
    assert_eq!(
        scheduled, JOBS as usize,
        "each job counted by the node that ran it"
    );
    assert_eq!(
        processed, JOBS as usize,
        "each task counted by the node that ran it"
    );
    let work = node_b.user_store("work").unwrap();
    let (runs, done) = work
        .read_blocking(|r| -> Result<_> {
            Ok((
                r.query::<Job>().column(Job::runs)?,
                r.query::<Done>().count()?,
            ))
        })
        .unwrap();
    assert_eq!(runs, vec![1; JOBS as usize]);
    assert_eq!(done, JOBS as u64);
    assert_eq!(work.next_due().unwrap(), None, "nothing left to run");
}

/// A change committed on one node is announced on every node, once.
#[test]
fn a_change_on_one_node_is_announced_on_every_node() {
    let url = postgres_database();
    let (_a, node_a) = node(&url);
    let (_b, node_b) = node(&url);
    let (mut on_a, mut on_b) = (node_a.changes(), node_b.changes());
    node_a
        .user_store("ann")
        .unwrap()
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "hits".into(),
                value: 1,
            })
        })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let heard = |changes: &mut tokio::sync::broadcast::Receiver<Change>| {
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), changes.recv()).await
        })
        .expect("announced within 10 s")
        .unwrap()
    };
    let expected = Change {
        store: "ann".into(),
        item_types: vec!["t.pg.counter".into()],
    };
    assert_eq!(heard(&mut on_b), expected, "on the other node");
    assert_eq!(heard(&mut on_a), expected, "on the node that wrote");
    // Once each.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(on_a.try_recv().is_err() && on_b.try_recv().is_err());
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.upload", version = 1)]
struct Upload {
    title: String,
}

/// A file attached on one node is read on another, whose folder has
/// never seen it: nodes keep no files of their own.
#[test]
fn a_file_attached_on_one_node_is_read_on_another() {
    let url = postgres_database();
    let (_a, node_a) = node(&url);
    let (_b, node_b) = node(&url);
    let up = node_a
        .user_store("ann")
        .unwrap()
        .write_blocking(|tx| -> Result<_> {
            let up = tx.insert(&Upload {
                title: "photo".into(),
            })?;
            tx.attach_file(up, "photo.jpg", b"the bytes")?;
            Ok(up)
        })
        .unwrap();
    let on_b = node_b.user_store("ann").unwrap();
    let (data, path) = on_b
        .read_blocking(move |r| -> Result<_> {
            Ok((r.file(up, "photo.jpg")?, r.file_path(up, "photo.jpg")?))
        })
        .unwrap();
    assert_eq!(data.as_deref(), Some(&b"the bytes"[..]));
    let path = path.expect("a path");
    assert!(path.starts_with(on_b.files_dir()));
    assert_eq!(std::fs::read(&path).unwrap(), b"the bytes");
    assert!(on_b.check().unwrap().is_empty());
    // Replaced on node A, node B reads the new file, by path too.
    node_a
        .user_store("ann")
        .unwrap()
        .write_blocking(move |tx| tx.attach_file(up, "photo.jpg", b"new bytes"))
        .unwrap();
    let path = on_b
        .read_blocking(move |r| r.file_path(up, "photo.jpg"))
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.author", version = 1)]
struct Author {
    #[item(unique)]
    name: String,
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pg.book", version = 1)]
struct Book {
    #[item(on_delete = "cascade")]
    author: Ref<Author>,
    title: String,
    price: Decimal,
    score: f64,
    cover: Vec<u8>,
}

/// A SQLite site with a few users, each with items that refer to each
/// other, attached files and scheduled work.
fn sqlite_site_with_users(dir: &std::path::Path, users: usize) -> Site {
    let site = Site::open(dir).unwrap();
    for u in 0..users {
        site.user_store(&format!("user{u}"))
            .unwrap()
            .write_blocking(|tx| -> Result<()> {
                let a = tx.insert(&Author {
                    name: format!("author {u}"),
                })?;
                for b in 0..3 {
                    let book = tx.insert(&Book {
                        author: a,
                        title: format!("book {b} of {u}"),
                        price: Decimal::new(1999 + b, 2),
                        score: 0.1 * b as f64,
                        cover: vec![u as u8, b as u8, 0, 255],
                    })?;
                    tx.attach_file(book, "cover.txt", format!("cover {u}/{b}").as_bytes())?;
                }
                let job = tx.insert(&Job { runs: 0, millis: 0 })?;
                tx.schedule(job, Timestamp::from_micros(4_000_000_000_000_000))?;
                Ok(())
            })
            .unwrap();
    }
    site
}

/// A book as its reader sees it: author's name, title, price, cover, and
/// the attached cover file.
type BookSeen = (String, String, String, Vec<u8>, Option<Vec<u8>>);

/// Everything a user sees of their store: books with their authors' names
/// and their covers, and when their job is due.
fn what_user_sees(site: &Site, user: &str) -> (Vec<BookSeen>, Vec<Option<Timestamp>>) {
    site.user_store(user)
        .unwrap()
        .read_blocking(|r| -> Result<_> {
            let mut books = Vec::new();
            for b in r.query::<Book>().order_by(Book::title.asc()).all()? {
                let author = r.get(b.author)?;
                books.push((
                    author.name.clone(),
                    b.title.clone(),
                    b.price.to_string(),
                    b.cover.clone(),
                    r.file(b.id(), "cover.txt")?,
                ));
            }
            let jobs = r
                .query::<Job>()
                .all()?
                .into_iter()
                .map(|j| r.scheduled_at(j.id()))
                .collect::<Result<Vec<_>>>()?;
            Ok((books, jobs))
        })
        .unwrap()
}

/// A SQLite site copied into PostgreSQL and back holds the same: every
/// item, reference, file and schedule entry, with their ids; new ids come
/// after the copied ones; an interrupted copy resumes; a target holding
/// something else is refused.
#[test]
fn a_site_moves_to_postgres_and_back_whole() {
    const USERS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let original = sqlite_site_with_users(&dir.path().join("sqlite"), USERS);
    let url = postgres_database();
    let on_pg = Site::open_postgres(dir.path().join("node"), &url).unwrap();

    // Interrupted after the site store and two users.
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        original.copy_to(&on_pg, false, |done, _, _| {
            assert!(done < 3, "interrupted");
        })
    }));
    assert!(interrupted.is_err());
    let mut seen = Vec::new();
    let report = original
        .copy_to(&on_pg, false, |done, total, name| {
            seen.push((done, total, name.to_string()))
        })
        .unwrap();
    assert_eq!(report.already_there, 3, "{report:?}");
    assert_eq!(report.copied, USERS + 1 - 3, "{report:?}");
    assert_eq!(seen.last().unwrap().0, USERS + 1);
    assert_eq!(on_pg.user_names().unwrap(), original.user_names().unwrap());
    for u in 0..USERS {
        let user = format!("user{u}");
        assert_eq!(
            what_user_sees(&on_pg, &user),
            what_user_sees(&original, &user),
            "{user}"
        );
    }
    // Ids go on after the copied ones, and the copy takes writes.
    let moved = on_pg.user_store("user0").unwrap();
    let copied_max = moved
        .read_blocking(|r| r.query::<Book>().column(Book::author))
        .unwrap()
        .into_iter()
        .map(|a| a.id())
        .chain(
            moved
                .read_blocking(|r| r.query::<Job>().all())
                .unwrap()
                .into_iter()
                .map(|j| j.id().id()),
        )
        .max()
        .unwrap();
    let new_id = moved
        .write_blocking(|tx| tx.insert(&Author { name: "new".into() }))
        .unwrap();
    assert!(
        new_id.id() > copied_max,
        "a new id after the copied ones: {new_id:?}"
    );
    moved.write_blocking(move |tx| tx.delete(new_id)).unwrap();

    // Back to SQLite, in a new folder.
    let back = Site::open(dir.path().join("back")).unwrap();
    let report = on_pg.copy_to(&back, false, |_, _, _| {}).unwrap();
    assert_eq!(report.copied, USERS + 1);
    for u in 0..USERS {
        let user = format!("user{u}");
        assert_eq!(
            what_user_sees(&back, &user),
            what_user_sees(&original, &user),
            "{user}"
        );
    }
    assert!(
        back.user_store("user3")
            .unwrap()
            .check()
            .unwrap()
            .is_empty()
    );

    // The copy has changed since (a new author): copying again says so,
    // and replacing makes it the original's again.
    moved
        .write_blocking(|tx| {
            tx.insert(&Author {
                name: "since".into(),
            })
        })
        .unwrap();
    let changed = original
        .copy_to(&on_pg, false, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(changed.contains("an earlier run copied it"), "{changed}");
    let report = original.copy_to(&on_pg, true, |_, _, _| {}).unwrap();
    assert_eq!(report.copied, USERS + 1, "{report:?}");
    assert_eq!(
        what_user_sees(&on_pg, "user0"),
        what_user_sees(&original, "user0")
    );

    // A target with stores of its own is refused, and left alone.
    let other = Site::open(dir.path().join("other")).unwrap();
    other
        .user_store("user1")
        .unwrap()
        .write_blocking(|tx| {
            tx.insert(&Author {
                name: "mine".into(),
            })
        })
        .unwrap();
    let refused = original
        .copy_to(&other, false, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(refused.contains("holds items of its own"), "{refused}");
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pgup.contact", version = 2)]
struct Contact {
    full_name: String,
    email: Option<String>,
}

// Version 1 called the attribute `name` and had no email.
upgrader!(Contact, 1, |item| {
    item.rename("name", "full_name");
    item.set("email", None::<String>);
    Ok(())
});

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.pgup.call", version = 1)]
struct Call {
    #[item(on_delete = "cascade")]
    contact: Ref<Contact>,
    minutes: i64,
}

/// Runs `sql` on the site's database as the site's own role, in one
/// transaction, each statement separated by `;`.
fn as_site_role(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("BEGIN; {sql}; COMMIT"))
            .await
            .unwrap();
    });
}

/// Puts the contacts' table back as version 1 made it, with two contacts
/// in ann's store and one in bob's, and a call to one of ann's; then runs
/// `more` (statements that may name `{store:NAME}`'s id) and moves the id
/// sequence past `last_id`.
fn contacts_at_version_1(url: &str, more: &str, last_id: i64) {
    let store_id =
        |name: &str| format!("(SELECT id FROM _stores WHERE name = 'user/{name}')::text");
    let mut more = more.to_string();
    while let Some(at) = more.find("{store:") {
        let end = at + more[at..].find('}').unwrap();
        let name = more[at + 7..end].to_string();
        more.replace_range(at..=end, &store_id(&name));
    }
    as_site_role(
        url,
        &format!(
            "DROP TABLE \"item_t.pgup.contact\" CASCADE;
             CREATE TABLE \"item_t.pgup.contact\" (
                 _store BIGINT NOT NULL DEFAULT NULLIF(current_setting('mantissa.store', true), '')::bigint,
                 id BIGINT GENERATED BY DEFAULT AS IDENTITY, name TEXT COLLATE \"C\" NOT NULL,
                 PRIMARY KEY (_store, id));
             CREATE INDEX \"item_t.pgup.contact__name\" ON \"item_t.pgup.contact\" (_store, name);
             ALTER TABLE \"item_t.pgup.contact\" ENABLE ROW LEVEL SECURITY;
             ALTER TABLE \"item_t.pgup.contact\" FORCE ROW LEVEL SECURITY;
             CREATE POLICY v1 ON \"item_t.pgup.contact\"
                 USING (_store = NULLIF(current_setting('mantissa.store', true), '')::bigint);
             UPDATE _types SET version = 1, shape = NULL WHERE name = 't.pgup.contact';
             SELECT set_config('mantissa.store', {ann}, true);
             INSERT INTO \"item_t.pgup.contact\" (id, name) VALUES (7, 'Ann Smith'), (9, 'Al Jones');
             INSERT INTO \"item_t.pgup.call\" (contact, minutes) VALUES (9, 3);
             SELECT set_config('mantissa.store', {bob}, true);
             INSERT INTO \"item_t.pgup.contact\" (id, name) VALUES (12, 'Bob Brown');
             {more};
             SELECT setval(pg_get_serial_sequence('\"item_t.pgup.contact\"', 'id'), {last_id})",
            ann = store_id("ann"),
            bob = store_id("bob"),
        ),
    );
}

/// The first three of `name`'s contacts by name: id, name, email.
fn contacts(site: &Site, name: &str) -> Vec<(i64, String, Option<String>)> {
    site.user_store(name)
        .unwrap()
        .read_blocking(|r| {
            Ok::<_, StoreError>(
                r.query::<Contact>()
                    .order_by(Contact::full_name.asc())
                    .limit(3)
                    .all()?
                    .into_iter()
                    .map(|c| (c.id().id(), c.full_name.clone(), c.email.clone()))
                    .collect(),
            )
        })
        .unwrap()
}

/// What [`contacts_at_version_1`] wrote for ann and bob, upgraded (ann's
/// read on `on_ann`, bob's on `on_bob`): ids kept, a new contact's id past
/// `last_id`, the call's reference to contact 9 still cascading, and one
/// to a contact that is not there refused.
fn ann_and_bob_upgraded(on_ann: &Site, on_bob: &Site, last_id: i64) {
    assert_eq!(
        contacts(on_ann, "ann"),
        [
            (9, "Al Jones".to_string(), None),
            (7, "Ann Smith".to_string(), None)
        ]
    );
    assert_eq!(
        contacts(on_bob, "bob"),
        [(12, "Bob Brown".to_string(), None)]
    );
    let ann = on_ann.user_store("ann").unwrap();
    let new = ann
        .write_blocking(|tx| {
            tx.insert(&Contact {
                full_name: "New".into(),
                email: Some("new@example.org".into()),
            })
        })
        .unwrap();
    assert!(new.id() > last_id, "{new:?}");
    ann.write_blocking(|tx| tx.delete(Ref::<Contact>::from_id(9)))
        .unwrap();
    assert_eq!(ann.read_blocking(|r| r.query::<Call>().count()).unwrap(), 0);
    let refused = ann
        .write_blocking(|tx| {
            tx.insert(&Call {
                contact: Ref::from_id(999_999),
                minutes: 1,
            })
        })
        .unwrap_err()
        .to_string();
    assert!(refused.contains("does not exist"), "{refused}");
}

/// A site whose contacts are stored at version 1 in every store is
/// upgraded when it opens: every store's items, their ids kept, the
/// references to them still enforced; new ids come after the old ones.
#[test]
fn an_item_type_is_upgraded_in_every_store_when_the_site_opens() {
    let url = postgres_database();
    let (dir, site) = node(&url);
    for name in ["ann", "bob"] {
        site.user_store(name).unwrap();
    }
    drop(site);
    contacts_at_version_1(&url, "SELECT 1", 12);
    let site = Site::open_postgres(dir.path(), &url).unwrap();
    ann_and_bob_upgraded(&site, &site, 12);
    // Opened again, nothing is upgraded twice.
    drop(site);
    let again = Site::open_postgres(dir.path(), &url).unwrap();
    assert_eq!(
        again
            .user_store("bob")
            .unwrap()
            .read_blocking(|r| r.query::<Contact>().count())
            .unwrap(),
        1
    );
}

/// The first column of the first row of `sql`, as text, run as the
/// site's own role.
fn scalar_as_site_role(url: &str, sql: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query_opt(sql, &[])
            .await
            .unwrap()
            .and_then(|row| row.get::<_, Option<String>>(0))
    })
}

/// A site whose contacts, over 10,000 of them, are stored at version 1
/// opens without waiting for them: the type's table is renamed aside and
/// each store's contacts are upgraded into the new one when the store is
/// opened (on whichever node), the rest by the nodes in the background,
/// store by store; then the old table goes. Ids are kept, references
/// still enforced, new ids come after the old ones.
#[test]
fn a_large_item_type_is_upgraded_store_by_store_in_the_background() {
    let url = postgres_database();
    let (dir, site) = node(&url);
    for name in ["ann", "bob", "dee"] {
        site.user_store(name).unwrap();
    }
    // A hundred stores of 101 contacts each: moving them one by one takes
    // the nodes a while.
    let crowd: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    for name in &crowd {
        site.user_store(name).unwrap();
    }
    drop(site);
    contacts_at_version_1(
        &url,
        "DO $crowd$ DECLARE s RECORD; BEGIN
             FOR s IN SELECT id, row_number() OVER (ORDER BY id) AS n FROM _stores
                      WHERE name LIKE 'user/s%' LOOP
                 PERFORM set_config('mantissa.store', s.id::text, true);
                 INSERT INTO \"item_t.pgup.contact\" (id, name)
                     SELECT s.n * 1000 + g, 'Person ' || g FROM generate_series(0, 100) g;
             END LOOP;
         END $crowd$;
         SELECT set_config('mantissa.store', {store:dee}, true);
         INSERT INTO \"item_t.pgup.contact\" (id, name) VALUES (200000, 'D1'), (200001, 'D2'), (200002, 'D3')",
        200_002,
    );
    let moving = || {
        scalar_as_site_role(
            &url,
            "SELECT string_agg(name || ' from ' || old_table, ', ') FROM _upgrading",
        )
    };

    let node_a = Site::open_postgres(dir.path(), &url).unwrap();
    assert_eq!(
        moving().as_deref(),
        Some("t.pgup.contact from item_t.pgup.contact__v1"),
        "the site opened before its contacts were all upgraded"
    );
    // A store deleted meanwhile takes its own contacts with it, and
    // nobody else's, wherever they are.
    node_a.delete_user_store("dee").unwrap();
    let (_b, node_b) = node(&url);
    ann_and_bob_upgraded(&node_a, &node_b, 200_002);

    // Nobody opens the crowd's stores: the nodes move them, then end the
    // move.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while moving().is_some() {
        assert!(
            std::time::Instant::now() < until,
            "still moving after 120 s: {:?}",
            moving()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        scalar_as_site_role(
            &url,
            "SELECT to_regclass('\"item_t.pgup.contact__v1\"')::text"
        ),
        None,
        "the old table is gone"
    );
    assert_eq!(
        node_a.finish_upgrades().unwrap(),
        0,
        "nothing left to finish"
    );
    for name in &crowd {
        let store = node_a.user_store(name).unwrap();
        assert_eq!(
            store
                .read_blocking(|r| r.query::<Contact>().count())
                .unwrap(),
            101,
            "{name}"
        );
        // Found by the index of the new table.
        assert_eq!(
            store
                .read_blocking(|r| r
                    .query::<Contact>()
                    .filter(Contact::full_name.eq("Person 50"))
                    .count())
                .unwrap(),
            1
        );
    }
    assert_eq!(contacts(&node_b, "s7")[0].1, "Person 0");
    assert_eq!(contacts(&node_a, "dee"), [], "a new store of that name");
    drop((node_a, node_b));
    let again = Site::open_postgres(dir.path(), &url).unwrap();
    assert_eq!(moving(), None);
    assert_eq!(
        contacts(&again, "bob"),
        [(12, "Bob Brown".to_string(), None)]
    );
}

/// A store deleted on one node and made again there: another node that
/// had it open refuses writes through its old handle (never writes them
/// where nobody would see them), and soon hands out the new store.
#[test]
fn a_store_deleted_on_one_node_is_not_written_to_through_another() {
    let url = postgres_database();
    let (_a, node_a) = node(&url);
    let (_b, node_b) = node(&url);
    let old_on_b = node_b.user_store("ann").unwrap();
    old_on_b
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "hits".into(),
                value: 1,
            })
        })
        .unwrap();
    node_a.delete_user_store("ann").unwrap();
    let refused = old_on_b
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "lost?".into(),
                value: 2,
            })
        })
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Closed)
            || refused.to_string().contains("this store was deleted"),
        "{refused}"
    );
    let new_on_a = node_a.user_store("ann").unwrap();
    new_on_a
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "hits".into(),
                value: 10,
            })
        })
        .unwrap();
    // Node B hears of the deletion and opens the new store next time.
    let mut seen = None;
    for _ in 0..200 {
        seen = value(&node_b.user_store("ann").unwrap());
        if seen == Some(10) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, Some(10), "node B serves the new store");
    assert!(matches!(
        old_on_b.read_blocking(|r| r.query::<Counter>().count()),
        Err(StoreError::Closed)
    ));
    // Nothing was written under the old store's id where nobody sees it.
    assert_eq!(
        new_on_a
            .read_blocking(|r| r.query::<Counter>().count())
            .unwrap(),
        1
    );
}

/// Set for a child process of this test binary that is to be a node of
/// the site in the database it names ([`node_process`]).
const NODE_OF: &str = "MANTISSA_TEST_NODE_OF";

/// Not a test on its own: run by [`due_work_is_run_once_while_nodes_are_killed`]
/// as a node, a process of its own that opens the site, runs its due
/// work over and over, and says on its output when it is ready and each
/// time it hears of a change to the store "bell". Returns at once
/// otherwise.
#[test]
fn node_process() {
    let Ok(url) = std::env::var(NODE_OF) else {
        return;
    };
    let (_dir, site) = node(&url);
    let mut changes = site.changes();
    std::thread::spawn(move || {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match changes.blocking_recv() {
                Ok(c) if c.store == "bell" => println!("heard bell"),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    println!("ready");
    loop {
        site.run_due(Timestamp::now()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A node of [`node_process`], and what it says.
struct NodeProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl NodeProcess {
    fn start(url: &str) -> NodeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["node_process", "--exact", "--nocapture", "--test-threads=1"])
            .env(NODE_OF, url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let node = NodeProcess { child, lines };
        node.wait_for("ready");
        node
    }

    fn wait_for(&self, what: &str) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                // libtest's "test node_process ... " comes first, on the
                // same line.
                Ok(line) if line.ends_with(what) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the node did not say {what:?} within 20 s");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three node processes run the due work of six stores (slow scheduled
/// jobs and queued tasks) while one after another is killed with SIGKILL,
/// often in the middle of a job, and started again: every job runs
/// exactly once and every task is processed exactly once (a job cut off
/// by the kill rolls back and is run again by a node still up), and a
/// change made afterwards is announced to every node, the restarted ones
/// too.
#[test]
fn due_work_is_run_once_while_nodes_are_killed() {
    const STORES: usize = 6;
    const JOBS: i64 = 50;
    let url = postgres_database();
    let (_d, site) = node(&url);
    let t0 = Timestamp::now();
    let stores: Vec<Store> = (0..STORES)
        .map(|s| site.user_store(&format!("w{s}")).unwrap())
        .collect();
    for store in &stores {
        store
            .write_blocking(|tx| -> Result<()> {
                for n in 0..JOBS {
                    let job = tx.insert(&Job {
                        runs: 0,
                        millis: 20,
                    })?;
                    tx.schedule(job, t0)?;
                    tx.insert(&Task { n })?;
                }
                Ok(())
            })
            .unwrap();
    }
    let done = || {
        stores.iter().all(|s| {
            s.read_blocking(|r| -> Result<_> {
                Ok(r.query::<Done>().count()? == JOBS as u64
                    && r.query::<Job>().filter(Job::runs.eq(0)).count()? == 0)
            })
            .unwrap()
        })
    };
    let mut nodes: Vec<NodeProcess> = (0..3).map(|_| NodeProcess::start(&url)).collect();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut kills = 0;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "the work is not done after 120 s and {kills} kills"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
        // SIGKILL: no shutdown of any kind.
        nodes[kills % 3] = NodeProcess::start(&url);
        kills += 1;
    }
    eprintln!("{kills} nodes killed while the work ran");
    assert!(kills >= 3, "the work outlasted a few kills: {kills}");
    for store in &stores {
        let (runs, processed) = store
            .read_blocking(|r| -> Result<_> {
                Ok((
                    r.query::<Job>().column(Job::runs)?,
                    r.query::<Done>().count()?,
                ))
            })
            .unwrap();
        assert_eq!(
            runs,
            vec![1; JOBS as usize],
            "{}: each job ran once",
            store.name()
        );
        assert_eq!(processed, JOBS as u64, "{}", store.name());
        assert_eq!(store.next_due().unwrap(), None, "nothing left to run");
    }
    site.user_store("bell")
        .unwrap()
        .write_blocking(|tx| {
            tx.insert(&Counter {
                name: "rung".into(),
                value: 1,
            })
        })
        .unwrap();
    for node in &nodes {
        node.wait_for("heard bell");
    }
}
