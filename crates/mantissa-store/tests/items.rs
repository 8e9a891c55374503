//! Items, transactions, references and queries, as an application uses them.

use mantissa_store::*;

mod refused;
use refused::Refused;

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.author", version = 1)]
struct Author {
    #[item(unique)]
    name: String,
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.post", version = 1, index(author, views))]
struct Post {
    #[item(index)]
    title: String,
    #[item(on_delete = "cascade")]
    author: Ref<Author>,
    views: i64,
    score: f64,
    draft: bool,
    body: Vec<u8>,
    published: Option<Timestamp>,
    price: Decimal,
    meta: serde_json::Value,
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "t.comment", version = 1)]
struct Comment {
    #[item(on_delete = "nullify")]
    post: Option<Ref<Post>>,
    #[item(on_delete = "refuse")]
    by: Ref<Author>,
    text: String,
}

fn site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    (dir, site)
}

fn post(author: Ref<Author>, title: &str, views: i64) -> Post {
    Post {
        title: title.into(),
        author,
        views,
        score: views as f64 / 10.0,
        draft: views % 2 == 0,
        body: title.as_bytes().to_vec(),
        published: (views > 0).then(|| Timestamp::from_micros(views * 1_000_000)),
        price: Decimal::new(views * 100 + 5, 2),
        meta: serde_json::json!({ "views": views }),
    }
}

#[test]
fn every_attribute_type_round_trips() {
    let (_d, site) = site();
    let s = site.user_store("alice").unwrap();
    let (id, original) = s
        .write_blocking(|tx| -> Result<_> {
            let a = tx.insert(&Author { name: "Ann".into() })?;
            let p = post(a, "Hello 'world' \u{1F600}", 7);
            Ok((tx.insert(&p)?, p))
        })
        .unwrap();
    let loaded = s.read_blocking(move |r| r.get(id)).unwrap();
    assert_eq!(loaded.id(), id);
    assert_eq!(*loaded, original);
}

#[test]
fn update_delete_and_ids_are_never_reused() {
    let (_d, site) = site();
    let s = site.user_store("alice").unwrap();
    let (a, first) = s
        .write_blocking(|tx| -> Result<_> {
            let a = tx.insert(&Author { name: "Ann".into() })?;
            Ok((a, tx.insert(&post(a, "one", 1))?))
        })
        .unwrap();
    s.write_blocking(move |tx| {
        let mut p = tx.get(first)?;
        p.views = 100;
        tx.update(&p)?;
        tx.delete(first)
    })
    .unwrap();
    let second = s
        .write_blocking(move |tx| tx.insert(&post(a, "two", 2)))
        .unwrap();
    assert!(second.id() > first.id(), "ids are never reused");
    let gone = s.read_blocking(move |r| r.find(first)).unwrap();
    assert!(gone.is_none());
    let err = s.write_blocking(move |tx| tx.delete(first)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("t.post #{} does not exist", first.id())
    );
}

#[test]
fn transactions_are_all_or_nothing() {
    let (_d, site) = site();
    let s = site.user_store("alice").unwrap();
    let err = s
        .write_blocking(|tx| {
            tx.insert(&Author { name: "A".into() })?;
            Err::<(), _>(Refused::Because("changed my mind"))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "changed my mind");
    let err = s
        .write_blocking(|tx| {
            tx.insert(&Author { name: "B".into() })?;
            panic!("boom");
            #[allow(unreachable_code)]
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Panicked(ref m) if m == "boom"),
        "{err}"
    );
    let n = s.read_blocking(|r| r.query::<Author>().count()).unwrap();
    assert_eq!(n, 0, "nothing of either transaction was kept");
    // The store still works after a panic.
    s.write_blocking(|tx| tx.insert(&Author { name: "C".into() }))
        .unwrap();
}

#[test]
fn unique_attributes_refuse_duplicates_with_a_clear_error() {
    let (_d, site) = site();
    let s = site.user_store("alice").unwrap();
    s.write_blocking(|tx| tx.insert(&Author { name: "Ann".into() }))
        .unwrap();
    let err = s
        .write_blocking(|tx| tx.insert(&Author { name: "Ann".into() }))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "another item already has this t.author.name"
    );
}

#[test]
fn references_follow_their_on_delete_rules() {
    let (_d, site) = site();
    let s = site.user_store("alice").unwrap();
    let (ann, bob, p, c) = s
        .write_blocking(|tx| -> Result<_> {
            let ann = tx.insert(&Author { name: "Ann".into() })?;
            let bob = tx.insert(&Author { name: "Bob".into() })?;
            let p = tx.insert(&post(ann, "p", 1))?;
            let c = tx.insert(&Comment {
                post: Some(p),
                by: bob,
                text: "hi".into(),
            })?;
            Ok((ann, bob, p, c))
        })
        .unwrap();

    // refuse: Bob still wrote a comment.
    let err = s.write_blocking(move |tx| tx.delete(bob)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot delete this t.author: t.comment.by still refers to it"
    );
    // cascade: deleting Ann deletes her post; nullify: the comment stays,
    // without its post.
    s.write_blocking(move |tx| tx.delete(ann)).unwrap();
    let (post_left, comment) = s
        .read_blocking(move |r| -> Result<_> { Ok((r.find(p)?, r.get(c)?)) })
        .unwrap();
    assert!(post_left.is_none());
    assert_eq!(comment.post, None);

    // A reference to nothing is refused.
    let err = s
        .write_blocking(move |tx| tx.insert(&post(Ref::from_id(999), "x", 1)))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.post.author refers to a t.author that does not exist"
    );
}

fn seeded() -> (tempfile::TempDir, Store, Ref<Author>, Ref<Author>) {
    let (d, site) = site();
    let s = site.user_store("q").unwrap();
    let (ann, bob) = s
        .write_blocking(|tx| -> Result<_> {
            let ann = tx.insert(&Author { name: "Ann".into() })?;
            let bob = tx.insert(&Author { name: "Bob".into() })?;
            for i in 0..10 {
                let who = if i < 6 { ann } else { bob };
                tx.insert(&post(who, &format!("post {i}"), i))?;
            }
            tx.insert(&post(bob, "Another 100% thing", 3))?;
            Ok((ann, bob))
        })
        .unwrap();
    (d, s, ann, bob)
}

#[test]
fn queries_compare_combine_and_sort() {
    let (_d, s, _ann, _bob) = seeded();
    let titles = s
        .read_blocking(|r| -> Result<_> {
            Ok(vec![
                r.query::<Post>()
                    .filter(Post::views.ge(3).and(Post::views.lt(6)))
                    .order_by(Post::views.desc())
                    .order_by(Post::title.asc())
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(Post::views.eq(0).or(Post::views.gt(8)))
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(!Post::title.starts_with("post"))
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(Post::views.is_in([1, 2]))
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(Post::title.like("%100\\%%"))
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(Post::published.is_null())
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(Post::price.gt(Decimal::new(800, 2)))
                    .order_by(Post::price.asc())
                    .column(Post::title)?,
                r.query::<Post>()
                    .filter(Post::views.ne(3))
                    .order_by(Post::views.desc())
                    .limit(2)
                    .offset(1)
                    .column(Post::title)?,
            ])
        })
        .unwrap();
    assert_eq!(
        titles[0],
        ["post 5", "post 4", "Another 100% thing", "post 3"]
    );
    assert_eq!(titles[1], ["post 0", "post 9"]);
    assert_eq!(titles[2], ["Another 100% thing"]);
    assert_eq!(titles[3], ["post 1", "post 2"]);
    assert_eq!(titles[4], ["Another 100% thing"]);
    assert_eq!(titles[5], ["post 0"]);
    assert_eq!(titles[6], ["post 8", "post 9"]);
    assert_eq!(titles[7], ["post 8", "post 7"]);
}

/// Conditions that hold for every item or for none, alone and combined
/// (an empty list of alternatives, an empty set of values): the same
/// answers on both engines (PostgreSQL takes no `1` or `0` as a
/// condition).
#[test]
fn conditions_true_or_false_for_every_item() {
    let (_d, s, _ann, _bob) = seeded();
    let counts = s
        .read_blocking(|r| -> Result<_> {
            Ok([
                r.query::<Post>().filter(Cond::always()).count()?,
                r.query::<Post>()
                    .filter(Post::views.is_in(Vec::<i64>::new()))
                    .count()?,
                r.query::<Post>()
                    .filter(!Post::views.is_in(Vec::<i64>::new()))
                    .count()?,
                r.query::<Post>().filter(Cond::all([])).count()?,
                r.query::<Post>().filter(Cond::any([])).count()?,
                r.query::<Post>()
                    .filter(Cond::any([]).or(Post::views.eq(4)))
                    .count()?,
                r.query::<Post>()
                    .filter(Cond::all([]).and(Post::views.lt(2)))
                    .count()?,
            ])
        })
        .unwrap();
    assert_eq!(counts, [11, 0, 11, 11, 0, 1, 2]);
}

/// `Store::stats`, as `mantissa store stats` and the administrator's page
/// show it: items per type, attached files and their bytes, and the bytes
/// the store takes, which grow as it does.
#[test]
fn stats_count_items_files_and_bytes() {
    let (_d, s, ann, _bob) = seeded();
    let before = s.stats().unwrap();
    assert_eq!(
        before.items,
        [("t.author".to_string(), 2), ("t.post".to_string(), 11)]
    );
    assert_eq!(before.files, (0, 0));
    assert!(before.bytes > 0, "{before:?}");
    s.write_blocking(move |tx| -> Result<_> {
        for i in 0..200 {
            let p = tx.insert(&post(ann, &format!("more {i}"), i))?;
            if i < 2 {
                tx.attach_file(p, "a.txt", &[b'x'; 1000])?;
            }
        }
        Ok(())
    })
    .unwrap();
    let after = s.stats().unwrap();
    assert_eq!(after.items[1], ("t.post".to_string(), 211));
    assert_eq!(after.files, (2, 2000));
    assert!(after.bytes > before.bytes, "{before:?} then {after:?}");
    assert_eq!(s.bytes().unwrap(), after.bytes, "the same size, uncounted");
}

#[test]
fn aggregates_and_joins() {
    let (_d, s, ann, bob) = seeded();
    let (count, sum, min, max, money, distinct, by_name, pairs) = s
        .read_blocking(move |r| -> Result<_> {
            Ok((
                r.query::<Post>().filter(Post::author.eq(ann)).count()?,
                r.query::<Post>().sum(Post::views)?,
                r.query::<Post>().min(Post::published)?,
                r.query::<Post>().max(Post::title)?,
                r.query::<Post>()
                    .filter(Post::views.lt(2))
                    .sum(Post::price)?,
                r.query::<Post>()
                    .filter(Post::views.lt(5))
                    .distinct(Post::draft)?,
                r.query::<Post>()
                    .filter(Post::author.matches(Author::name.eq("Bob")))
                    .count()?,
                r.query::<Post>()
                    .filter(Post::views.lt(2))
                    .columns2(Post::title, Post::author)?,
            ))
        })
        .unwrap();
    assert_eq!(count, 6);
    assert_eq!(sum, 45 + 3);
    assert_eq!(min, Some(Timestamp::from_micros(1_000_000)));
    assert_eq!(max.as_deref(), Some("post 9"));
    assert_eq!(money.to_string(), "1.10", "0.05 + 1.05, exactly");
    assert_eq!(distinct, [false, true]);
    assert_eq!(by_name, 5);
    assert_eq!(
        pairs,
        [("post 0".to_string(), ann), ("post 1".to_string(), ann)]
    );
    let _ = bob;
}

#[test]
fn keyset_pagination_visits_every_item_once() {
    let (_d, s, _, _) = seeded();
    let mut seen = Vec::new();
    let mut last: Option<Stored<Post>> = None;
    loop {
        let page = s
            .read_blocking(|r| {
                let mut q = r
                    .query::<Post>()
                    .order_by(Post::draft.asc())
                    .order_by(Post::views.desc())
                    .limit(3);
                if let Some(l) = &last {
                    q = q.after(l);
                }
                q.all()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|p| p.title.clone()));
        last = page.into_iter().last();
    }
    let all = s
        .read_blocking(|r| {
            r.query::<Post>()
                .order_by(Post::draft.asc())
                .order_by(Post::views.desc())
                .column(Post::title)
        })
        .unwrap();
    assert_eq!(seen, all);
    assert_eq!(seen.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reads_and_writes_in_parallel_stores() {
    let (_d, site) = site();
    let mut tasks = Vec::new();
    for u in 0..8 {
        let store = site.user_store(&format!("user{u}")).unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let name = format!("{u}-{i}");
                store
                    .write(move |tx| tx.insert(&Author { name }))
                    .await
                    .unwrap();
            }
            store.read(|r| r.query::<Author>().count()).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 20);
    }
}

/// Reads that block for a long time (a huge scan, a slow disk) must not
/// hold up a quick one behind them: more slow reads than there are reader
/// threads are kept waiting until the quick read has answered, which it
/// can only do if it does not queue behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reads_do_not_hold_up_quick_ones() {
    let (_d, site) = site();
    let store = site.store().clone();
    store
        .write(|tx| tx.insert(&Author { name: "a".into() }))
        .await
        .unwrap();
    let release = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let mut slow = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        let release = release.clone();
        slow.push(tokio::spawn(async move {
            store
                .read(move |r| {
                    let (lock, cvar) = &*release;
                    let mut go = lock.lock().unwrap();
                    while !*go {
                        go = cvar.wait(go).unwrap();
                    }
                    r.query::<Author>().count()
                })
                .await
        }));
        // Spread over time, as requests arrive.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let quick = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        store.read(|r| r.query::<Author>().count()),
    )
    .await;
    {
        let (lock, cvar) = &*release;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }
    assert_eq!(
        quick
            .expect("the quick read waited behind the slow ones")
            .unwrap(),
        1
    );
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap(), 1);
    }
}

#[test]
fn files_are_attached_and_leave_with_their_item() {
    let (_d, site) = site();
    let s = site.user_store("alice").unwrap();
    let (a, p) = s
        .write_blocking(|tx| -> Result<_> {
            let a = tx.insert(&Author { name: "Ann".into() })?;
            let p = tx.insert(&post(a, "with files", 1))?;
            tx.attach_file(p, "photo.jpg", b"first")?;
            tx.attach_file(p, "photo.jpg", b"second")?;
            tx.attach_file(p, "notes.txt", b"n")?;
            Ok((a, p))
        })
        .unwrap();
    let (data, names, path) = s
        .read_blocking(move |r| -> Result<_> {
            Ok((
                r.file(p, "photo.jpg")?,
                r.files(p)?,
                r.file_path(p, "notes.txt")?,
            ))
        })
        .unwrap();
    assert_eq!(data.as_deref(), Some(&b"second"[..]));
    assert_eq!(names, ["notes.txt", "photo.jpg"]);
    let path = path.unwrap();
    assert!(path.is_file());
    // On SQLite the files are beside the store, and the replaced one is
    // gone; on PostgreSQL they are in the database, and only the one asked
    // for by its path is copied beside the store.
    let expected = if mantissa_store::testing::on_postgres() {
        1
    } else {
        2
    };
    assert_eq!(
        walk(s.files_dir()),
        expected,
        "the replaced file was removed"
    );

    // Rolling back keeps the files.
    let _ = s.write_blocking(move |tx| {
        tx.delete(p)?;
        Err::<(), _>(Refused::Because("no"))
    });
    assert!(path.is_file());
    // Deleting the author cascades to the post and its files.
    s.write_blocking(move |tx| tx.delete(a)).unwrap();
    assert!(!path.exists());
    assert_eq!(walk(s.files_dir()), 0);
    assert!(s.check().unwrap().is_empty());

    let err = s
        .write_blocking(|tx| {
            let a = tx.insert(&Author { name: "X".into() })?;
            let p = tx.insert(&post(a, "x", 1))?;
            tx.attach_file(p, "../escape", b"x")
        })
        .unwrap_err();
    assert!(err.to_string().contains("not a valid file name"), "{err}");
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            walk(&e.path())
        } else {
            1
        }
    })
    .sum()
}

/// The next change announced, waiting up to ten seconds for it.
fn next_change(changes: &mut tokio::sync::broadcast::Receiver<Change>) -> Option<Change> {
    for _ in 0..1000 {
        match changes.try_recv() {
            Ok(c) => return Some(c),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    None
}

#[test]
fn committed_writes_announce_what_they_changed_and_rolled_back_ones_do_not() {
    let (_d, site) = site();
    let mut changes = site.changes();
    let s = site.user_store("alice").unwrap();
    let ann = s
        .write_blocking(|tx| tx.insert(&Author { name: "Ann".into() }))
        .unwrap();
    assert_eq!(
        next_change(&mut changes),
        Some(Change {
            store: "alice".into(),
            item_types: vec!["t.author".into()]
        })
    );
    // A write that fails announces nothing; one that writes nothing
    // neither.
    let _ = s.write_blocking(|tx| -> Result<()> {
        tx.insert(&Author { name: "Bob".into() })?;
        Err(StoreError::Closed)
    });
    s.write_blocking(|tx| tx.query::<Author>().count()).unwrap();
    // Deleting an author may delete posts and change comments by cascade.
    s.write_blocking(move |tx| tx.delete(ann)).unwrap();
    assert_eq!(
        next_change(&mut changes),
        Some(Change {
            store: "alice".into(),
            item_types: vec!["t.author".into(), "t.comment".into(), "t.post".into()]
        })
    );
    assert_eq!(changes.try_recv().ok(), None);
}
