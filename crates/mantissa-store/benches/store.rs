//! Benchmarks of the object store, each beside a reference written with
//! plain rusqlite that does the same work in the same run.
//!
//! The references are what a careful hand-written application with the same
//! guarantees would do: the same table shape (STRICT, `id INTEGER PRIMARY
//! KEY AUTOINCREMENT`, the same index), the same pragmas (WAL,
//! `synchronous = FULL`), prepared statements from rusqlite's statement
//! cache, and the same SQLite (the store's own rusqlite, bundled). Each
//! setup checks that the two tables are declared identically and that the
//! two sides return the same rows.
//!
//! Run with `bench/run` (which prints every figure as a ratio against its
//! reference) or `cargo bench -p mantissa-store --bench store`. Environment:
//!
//! - `MANTISSA_BENCH_STORES`: user stores created for the cold-open
//!   benchmark (default 10000; fewer for a quick run).
//! - `MANTISSA_BENCH_DIR`: where the temporary sites go (default: the
//!   system's temporary folder).
//!
//! See `bench/README.md` for the figures.

mod common;
#[path = "common/items.rs"]
mod items;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Side, cpu_snapshot, note_other_cpu, one_at_a_time, paired, plain_open, scratch, settle_disk,
    write_extra, write_paired,
};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use items::{Entry, Note, SCORE_RANGE, entries, note};
use mantissa_store::{Ref, Site, Store};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

/// The tables the store creates for the two types, written out by hand for
/// the reference (checked against the store's in every setup).
const NOTE_TABLE: &str = r#"CREATE TABLE "item_bench.note" (id INTEGER PRIMARY KEY AUTOINCREMENT, "title" TEXT NOT NULL, "n" INTEGER NOT NULL, "done" INTEGER NOT NULL) STRICT"#;
const ENTRY_TABLE: &str = r#"CREATE TABLE "item_bench.entry" (id INTEGER PRIMARY KEY AUTOINCREMENT, "title" TEXT NOT NULL, "score" INTEGER NOT NULL, "done" INTEGER NOT NULL) STRICT"#;
const ENTRY_INDEX: &str =
    r#"CREATE INDEX "item_bench.entry__score" ON "item_bench.entry"("score")"#;

const INSERT_NOTE: &str =
    r#"INSERT INTO "item_bench.note" ("title", "n", "done") VALUES (?, ?, ?)"#;
const INSERT_ENTRY: &str =
    r#"INSERT INTO "item_bench.entry" ("title", "score", "done") VALUES (?, ?, ?)"#;
/// The store breaks ties by id, so the reference does too (same rows, same
/// order).
const TOP_20: &str = r#"SELECT id, "title", "score", "done" FROM "item_bench.entry" WHERE "score" < ?1 ORDER BY "score" DESC, id DESC LIMIT 20"#;
const NOTE_BY_ID: &str = r#"SELECT id, "title", "n", "done" FROM "item_bench.note" WHERE id = ?1"#;

/// What the reference side is called in criterion's folders and the
/// figures `bench/run` reads.
const REFERENCE: &str = "rusqlite";

const INSERT_ITEMS: usize = 100_000;
const QUERY_ITEMS: usize = 50_000;

/// A new reference database with the given schema.
fn plain_create(path: &Path, schema: &[&str]) -> Connection {
    let conn = plain_open(path, true);
    for sql in schema {
        conn.execute_batch(sql).expect("schema");
    }
    conn
}

fn table_sql(conn: &Connection, name: &str) -> String {
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no {name} in the schema: {e}"));
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Fails the run if the reference's table is not declared exactly like the
/// store's.
fn assert_same_schema(store_file: &Path, reference: &Connection, names: &[&str]) {
    let store = Connection::open_with_flags(store_file, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open store file");
    for name in names {
        assert_eq!(
            table_sql(&store, name),
            table_sql(reference, name),
            "the reference's {name} differs from the store's"
        );
    }
}

fn insert_note(conn: &Connection, n: &Note) -> i64 {
    let mut stmt = conn.prepare_cached(INSERT_NOTE).expect("prepare");
    stmt.execute(params![n.title, n.n, n.done]).expect("insert");
    conn.last_insert_rowid()
}

/// Writes one note on each side: a store makes an item type's table with
/// its first item.
fn first_note(store: &Store, plain: &Connection) {
    store
        .write_blocking(|tx| tx.insert(&note(0)))
        .expect("first note");
    insert_note(plain, &note(0));
}

/// Benchmark 1: 100,000 small items in one transaction, each iteration into
/// a new, empty store (or file); creating and closing it is not timed.
fn insert_100k(c: &mut Criterion) {
    let notes: Arc<Vec<Note>> = Arc::new((0..INSERT_ITEMS).map(note).collect());
    let root = scratch().join("insert");
    let mut k = 0;
    let cpu = cpu_snapshot();
    let mut g = c.benchmark_group("insert_100k");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(INSERT_ITEMS as u64));
    let make = || {
        let site = Site::open(root.join("site")).expect("site");
        let store = site.user_store("schema").expect("store");
        let plain = plain_create(&root.join("schema.sqlite"), &[NOTE_TABLE]);
        first_note(&store, &plain);
        assert_same_schema(store.path(), &plain, &["item_bench.note"]);
        site
    };
    let result = paired(&mut g, REFERENCE, make, |site, side| {
        k += 1;
        match side {
            Side::Store => {
                let name = format!("insert-{k}");
                let store = site.user_store(&name).expect("store");
                let notes = notes.clone();
                let start = Instant::now();
                let last = store
                    .write_blocking(move |tx| -> mantissa_store::Result<_> {
                        let mut last = None;
                        for n in notes.iter() {
                            last = Some(tx.insert(n)?);
                        }
                        Ok(last)
                    })
                    .expect("insert");
                let took = start.elapsed();
                black_box(last);
                drop(store);
                site.delete_user_store(&name).expect("delete store");
                took
            }
            Side::Reference => {
                let path = root.join(format!("plain-{k}.sqlite"));
                let mut conn = plain_create(&path, &[NOTE_TABLE]);
                let start = Instant::now();
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .expect("begin");
                let mut last = 0;
                for n in notes.iter() {
                    last = insert_note(&tx, n);
                }
                tx.commit().expect("commit");
                let took = start.elapsed();
                black_box(last);
                drop(conn);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(root.join(format!("plain-{k}.sqlite{suffix}")));
                }
                took
            }
        }
    });
    g.finish();
    note_other_cpu("insert_100k", cpu);
    write_paired("insert_100k", result);
    let _ = std::fs::remove_dir_all(&root);
    settle_disk();
}

struct QuerySetup {
    store: Store,
    plain: Connection,
    _site: Site,
}

fn query_setup() -> QuerySetup {
    static SETUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SETUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = scratch().join(format!("query-{n}"));
    let site = Site::open(root.join("site")).expect("site");
    let store = site.user_store("query").expect("store");
    let entries = entries(QUERY_ITEMS);
    let entries = Arc::new(entries);
    store
        .write_blocking({
            let entries = entries.clone();
            move |tx| -> mantissa_store::Result<_> {
                for e in entries.iter() {
                    tx.insert(e)?;
                }
                Ok(())
            }
        })
        .expect("fill store");
    let mut plain = plain_create(&root.join("plain.sqlite"), &[ENTRY_TABLE, ENTRY_INDEX]);
    {
        let tx = plain
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        for e in entries.iter() {
            tx.prepare_cached(INSERT_ENTRY)
                .expect("prepare")
                .execute(params![e.title, e.score, e.done])
                .expect("insert");
        }
        tx.commit().expect("commit");
    }
    assert_same_schema(
        store.path(),
        &plain,
        &["item_bench.entry", "item_bench.entry__score"],
    );
    // Both sides return the same 20 items, in the same order.
    for x in [0, 12_345, SCORE_RANGE / 2, SCORE_RANGE] {
        let a: Vec<(i64, Entry)> = store_top_20(&store, x)
            .into_iter()
            .map(|(id, e)| (id.id(), e))
            .collect();
        assert_eq!(a, plain_top_20(&plain, x), "results differ for score < {x}");
    }
    QuerySetup {
        store,
        plain,
        _site: site,
    }
}

fn store_top_20(store: &Store, x: i64) -> Vec<(Ref<Entry>, Entry)> {
    store
        .read_blocking(|r| {
            r.query::<Entry>()
                .filter(Entry::score.lt(x))
                .order_by(Entry::score.desc())
                .limit(20)
                .all()
        })
        .expect("query")
        .into_iter()
        .map(|s| (s.id(), s.into_inner()))
        .collect()
}

fn plain_top_20(conn: &Connection, x: i64) -> Vec<(i64, Entry)> {
    let mut stmt = conn.prepare_cached(TOP_20).expect("prepare");
    stmt.query_map([x], |r| {
        Ok((
            r.get(0)?,
            Entry {
                title: r.get(1)?,
                score: r.get(2)?,
                done: r.get(3)?,
            },
        ))
    })
    .expect("query")
    .collect::<rusqlite::Result<Vec<_>>>()
    .expect("rows")
}

/// How the store side of a paired benchmark reaches the store: blocking
/// (`read_blocking`, `write_blocking`) or awaited from a one-thread tokio
/// runtime (`read(..).await`, `write(..).await`), as a server's connection
/// thread awaits it. The reference always does its work on the calling
/// thread: the awaited ratio is what handing the work over adds.
#[derive(Clone, Copy)]
enum Call {
    Blocking,
    Awaited,
}

/// Benchmark 2: an indexed query with a sort and a limit of 20, over 50,000
/// items. Both sides draw the same sequence of thresholds, all above 1% of
/// the range, so every query finds its 20 items.
fn query_top_20(c: &mut Criterion) {
    query_group(c, "query_top_20", Call::Blocking, 11);
}

/// Benchmark 2, awaited.
fn query_top_20_async(c: &mut Criterion) {
    query_group(c, "query_top_20_async", Call::Awaited, 13);
}

fn query_group(c: &mut Criterion, group: &str, call: Call, seed: u64) {
    let mut rngs = [
        fastrand::Rng::with_seed(seed),
        fastrand::Rng::with_seed(seed),
    ];
    let rt = runtime();
    let cpu = cpu_snapshot();
    let mut g = one_at_a_time(c, group, Duration::from_secs(3));
    let result = paired(&mut g, REFERENCE, query_setup, |s, side| {
        let (items, took) = match side {
            Side::Store => {
                let x = rngs[0].i64(SCORE_RANGE / 100..SCORE_RANGE);
                let top = move |r: &mantissa_store::Read<'_>| {
                    r.query::<Entry>()
                        .filter(Entry::score.lt(x))
                        .order_by(Entry::score.desc())
                        .limit(20)
                        .all()
                };
                let start = Instant::now();
                let items = match call {
                    Call::Blocking => s.store.read_blocking(top),
                    Call::Awaited => rt.block_on(s.store.read(top)),
                }
                .expect("query");
                (items.len(), start.elapsed())
            }
            Side::Reference => {
                let x = rngs[1].i64(SCORE_RANGE / 100..SCORE_RANGE);
                let start = Instant::now();
                let items = plain_top_20(&s.plain, x);
                (items.len(), start.elapsed())
            }
        };
        debug_assert_eq!(items, 20);
        took
    });
    g.finish();
    note_other_cpu(group, cpu);
    write_paired(group, result);
}

/// Benchmark 3: committed single-insert write transactions at
/// `synchronous = FULL`.
fn single_write(c: &mut Criterion) {
    single_write_group(c, "single_write_tx", Call::Blocking);
}

/// Benchmark 3, awaited.
fn single_write_async(c: &mut Criterion) {
    single_write_group(c, "single_write_tx_async", Call::Awaited);
}

fn single_write_group(c: &mut Criterion, group: &str, call: Call) {
    let root = scratch().join(group);
    let item = note(42);
    let rt = runtime();
    let cpu = cpu_snapshot();
    let mut g = one_at_a_time(c, group, Duration::from_secs(3));
    let make = || {
        let site = Site::open(root.join("site")).expect("site");
        let store = site.user_store("single").expect("store");
        let plain = plain_create(&root.join("plain.sqlite"), &[NOTE_TABLE]);
        first_note(&store, &plain);
        assert_same_schema(store.path(), &plain, &["item_bench.note"]);
        settle_disk();
        (site, store, plain)
    };
    let result = paired(
        &mut g,
        REFERENCE,
        make,
        |(_, store, plain), side| match side {
            Side::Store => {
                let item = item.clone();
                let insert = move |tx: &mut mantissa_store::Write<'_>| tx.insert(&item);
                let start = Instant::now();
                let id = match call {
                    Call::Blocking => store.write_blocking(insert),
                    Call::Awaited => rt.block_on(store.write(insert)),
                }
                .expect("insert");
                let took = start.elapsed();
                black_box(id);
                took
            }
            Side::Reference => {
                let start = Instant::now();
                let tx = plain
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .expect("begin");
                let id = insert_note(&tx, &item);
                tx.commit().expect("commit");
                let took = start.elapsed();
                black_box(id);
                took
            }
        },
    );
    g.finish();
    note_other_cpu(group, cpu);
    write_paired(group, result);
}

/// Benchmark: a write transaction that writes nothing (what a write costs
/// besides SQLite's work: the store's own bookkeeping and, awaited, the
/// hand-over to the write pool). The reference begins and commits an
/// immediate transaction.
fn empty_write(c: &mut Criterion) {
    let root = scratch().join("empty");
    let cpu = cpu_snapshot();
    let mut g = one_at_a_time(c, "empty_write_tx", Duration::from_secs(3));
    let make = || {
        let site = Site::open(root.join("site")).expect("site");
        let store = site.user_store("empty").expect("store");
        let plain = plain_create(&root.join("plain.sqlite"), &[NOTE_TABLE]);
        (site, store, plain)
    };
    let result = paired(
        &mut g,
        REFERENCE,
        make,
        |(_, store, plain), side| match side {
            Side::Store => {
                let start = Instant::now();
                store
                    .write_blocking(|_| -> mantissa_store::Result<_> { Ok(()) })
                    .expect("write");
                start.elapsed()
            }
            Side::Reference => {
                let start = Instant::now();
                let tx = plain
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .expect("begin");
                tx.commit().expect("commit");
                start.elapsed()
            }
        },
    );
    g.finish();
    note_other_cpu("empty_write_tx", cpu);
    write_paired("empty_write_tx", result);
}

/// A runtime like a server's connection threads: one thread, no work
/// stealing.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn store_count() -> usize {
    let default = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        200
    };
    std::env::var("MANTISSA_BENCH_STORES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n >= 2)
        .unwrap_or(default)
}

fn user_name(i: usize) -> String {
    format!("user{i:05}")
}

/// Creates `n` user stores with one item each, with the store API.
fn create_stores(root: &Path, n: usize) -> Site {
    eprintln!(
        "cold_open: creating {n} user stores under {}",
        root.display()
    );
    let site = Site::open(root).expect("site");
    let start = Instant::now();
    // Eight at a time: making a store waits for the disk, three times.
    let made = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (site, made) = (&site, &made);
            scope.spawn(move || {
                for i in (t..n).step_by(8) {
                    let store = site.user_store(&user_name(i)).expect("create store");
                    let id = store
                        .write_blocking(|tx| tx.insert(&note(i)))
                        .expect("insert");
                    assert_eq!(id.id(), 1);
                    let done = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if done % 10_000 == 0 {
                        eprintln!(
                            "cold_open: {done} stores, {:.1} s",
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let took = start.elapsed();
    let bytes: u64 = std::fs::read_dir(root.join("users"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    eprintln!(
        "cold_open: created {n} stores in {:.1} s ({:.2} ms each), {} MB on disk",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / n as f64,
        bytes / 1_000_000
    );
    write_extra(
        "cold_open_setup",
        serde_json::json!({
            "stores": n,
            "seconds": took.as_secs_f64(),
            "ms_per_store": took.as_secs_f64() * 1e3 / n as f64,
            "bytes_on_disk": bytes,
        }),
    );
    site
}

/// Visits every store once in a random order, then again in the same order:
/// a store comes back only after all the others, long out of the cache.
struct Cold {
    order: Vec<usize>,
    next: usize,
}

impl Cold {
    fn new(n: usize, seed: u64) -> Cold {
        let mut order: Vec<usize> = (0..n).collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut order);
        Cold { order, next: 0 }
    }

    fn pick(&mut self) -> usize {
        let i = self.order[self.next];
        self.next = (self.next + 1) % self.order.len();
        i
    }
}

/// Benchmark 4: with 10,000 user stores on disk, opening one that is not
/// open and reading one item. The site keeps one user store open, so every
/// open is cold and also closes the store opened before it (as an open does
/// when the site's cache is full); the reference closes its file too.
fn cold_open(c: &mut Criterion) {
    let n = store_count();
    let root = scratch().join("cold");
    let users = root.join("users");
    let mut cold = [Cold::new(n, 1), Cold::new(n, 2)];
    let cpu = cpu_snapshot();
    let mut g = one_at_a_time(c, "cold_open_read", Duration::from_secs(4));
    let make = || {
        // Created through one site, measured through a fresh one.
        drop(create_stores(&root, n));
        settle_disk();
        let site = Site::open(&root).expect("site");
        site.set_open_stores(1);
        site
    };
    let result = paired(&mut g, REFERENCE, make, |site, side| match side {
        Side::Store => {
            let name = user_name(cold[0].pick());
            let start = Instant::now();
            let store = site.user_store(&name).expect("open");
            let item = store
                .read_blocking(|r| r.get(Ref::<Note>::from_id(1)))
                .expect("read");
            let took = start.elapsed();
            black_box(item);
            took
        }
        Side::Reference => {
            let name = user_name(cold[1].pick());
            let start = Instant::now();
            let conn = plain_open(&users.join(format!("{name}.sqlite")), false);
            let item = conn
                .query_row(NOTE_BY_ID, [1], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Note {
                            title: r.get(1)?,
                            n: r.get(2)?,
                            done: r.get(3)?,
                        },
                    ))
                })
                .expect("read");
            drop(conn);
            let took = start.elapsed();
            black_box(item);
            took
        }
    });
    g.finish();
    note_other_cpu("cold_open_read", cpu);
    write_paired("cold_open_read", result);
}

criterion_group! {
    name = benches;
    config = Criterion::default().configure_from_args();
    targets = insert_100k, query_top_20, query_top_20_async, empty_write, single_write,
        single_write_async, cold_open
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // A static is never dropped, so the folder is removed here.
    let _ = std::fs::remove_dir_all(scratch());
}
