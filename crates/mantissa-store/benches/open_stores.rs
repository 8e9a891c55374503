//! What holding many user stores open costs, beside as many plain rusqlite
//! connections with the same pragmas: threads, resident memory per store,
//! and single-item write transactions a second spread across them.
//!
//! Each side runs in a process of its own (this executable again, as a
//! child), so that one side's memory does not count for the other. A child
//! opens N stores (N = 1,000 and 5,000) that already exist on disk with
//! one item each, reads that item from each, and holds them all open; it
//! then reports its thread count and how much its resident memory grew,
//! and writes for a few seconds: 64 writes at a time, each inserting one
//! item into a store picked at random. The store side awaits
//! `Store::write` from a tokio runtime; the reference runs its writes on as
//! many threads as the store's write pool has, each taking a random
//! connection (behind a mutex) for a whole transaction.
//!
//! Run with `bench/run` (which prints the figures beside each other) or
//! `cargo bench -p mantissa-store --bench open_stores`. Environment:
//! `MANTISSA_BENCH_OPEN` (comma-separated counts, default `1000,5000`:
//! a SQLite file in WAL mode holds three descriptors open, its own, its
//! log's and its index's, so 10,000 at once need more than the 20,000 files
//! a process may open on the machines measured, on either side),
//! `MANTISSA_BENCH_DIR` (where the stores go). Run as a test (`cargo test`)
//! it does the same with 50 stores, once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{plain_open, scratch, write_extra};
use mantissa_store::{Item, Ref, Site};
use rusqlite::params;

#[derive(Item, Debug, Clone)]
#[item(name = "bench.open.note", version = 1)]
struct Note {
    title: String,
    n: i64,
}

const NOTE_BY_ID: &str = r#"SELECT id, "title", "n" FROM "item_bench.open.note" WHERE id = ?1"#;
const INSERT_NOTE: &str = r#"INSERT INTO "item_bench.open.note" ("title", "n") VALUES (?, ?)"#;

/// Writes under way at once.
const IN_FLIGHT: usize = 64;

fn user_name(i: usize) -> String {
    format!("user{i:05}")
}

fn counts() -> Vec<usize> {
    if !std::env::args().any(|a| a == "--bench") {
        return vec![50];
    }
    std::env::var("MANTISSA_BENCH_OPEN")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1_000, 5_000])
}

/// How long each side writes.
fn write_for() -> Duration {
    if std::env::args().any(|a| a == "--bench") {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(200)
    }
}

/// This process's threads and resident memory (KiB), from /proc.
fn threads_and_rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

/// What a child measured.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Measured {
    stores: usize,
    /// Threads with every store open, before writing.
    threads: u64,
    /// Threads halfway through the writes.
    threads_writing: u64,
    bytes_per_store: f64,
    writes_per_second: f64,
}

/// Creates `n` user stores with one item each (through the store API).
fn create(root: &Path, n: usize) {
    let site = Site::open(root).expect("site");
    let have = site.user_names().expect("names").len();
    for i in have..n {
        let store = site.user_store(&user_name(i)).expect("create");
        store
            .write_blocking(|tx| {
                tx.insert(&Note {
                    title: format!("note of {i}"),
                    n: i as i64,
                })
            })
            .expect("insert");
    }
    site.close().expect("close");
}

fn child(side: &str, root: &Path, n: usize, seconds: Duration) -> Measured {
    let (_, rss_before) = threads_and_rss();
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| root.join("users").join(format!("{}.sqlite", user_name(i))))
        .collect();
    // Counts the threads halfway through the writes (less itself).
    let halfway = |start: Instant| {
        std::thread::spawn(move || {
            std::thread::sleep((start + seconds / 2).saturating_duration_since(Instant::now()));
            threads_and_rss().0 - 1
        })
    };
    // Each side: threads and memory with every store open, then the
    // writes, their time, and the threads halfway through them.
    let (threads, rss_open, writes, took, writing) = if side == "store" {
        let site = Site::open(root).expect("site");
        site.set_open_stores(n + 1);
        let stores: Vec<_> = (0..n)
            .map(|i| site.user_store(&user_name(i)).expect("open"))
            .collect();
        for s in &stores {
            s.read_blocking(|r| r.get(Ref::<Note>::from_id(1)))
                .expect("read");
        }
        let (threads, rss_open) = threads_and_rss();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let writes = Arc::new(AtomicU64::new(0));
        let stores = Arc::new(stores);
        let start = Instant::now();
        let sampler = halfway(start);
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..IN_FLIGHT {
                let (stores, writes) = (stores.clone(), writes.clone());
                tasks.push(tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(t as u64);
                    while start.elapsed() < seconds {
                        let s = &stores[rng.usize(0..stores.len())];
                        s.write(|tx| {
                            tx.insert(&Note {
                                title: "written".into(),
                                n: 0,
                            })
                        })
                        .await
                        .expect("write");
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("writer");
            }
        });
        (
            threads,
            rss_open,
            writes.load(Ordering::Relaxed),
            start.elapsed(),
            sampler.join().expect("sampler"),
        )
    } else {
        let conns: Vec<Mutex<rusqlite::Connection>> = paths
            .iter()
            .map(|p| {
                let c = plain_open(p, false);
                c.query_row(NOTE_BY_ID, [1], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .expect("read");
                Mutex::new(c)
            })
            .collect();
        let (threads, rss_open) = threads_and_rss();
        let pool = std::env::var("MANTISSA_BENCH_POOL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        let writes = AtomicU64::new(0);
        let start = Instant::now();
        let sampler = halfway(start);
        std::thread::scope(|scope| {
            for t in 0..pool {
                let (conns, writes) = (&conns, &writes);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t as u64);
                    while start.elapsed() < seconds {
                        let mut c = conns[rng.usize(0..conns.len())].lock().expect("connection");
                        let tx = c
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .expect("begin");
                        tx.prepare_cached(INSERT_NOTE)
                            .expect("prepare")
                            .execute(params!["written", 0])
                            .expect("insert");
                        tx.commit().expect("commit");
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        (
            threads,
            rss_open,
            writes.load(Ordering::Relaxed),
            start.elapsed(),
            sampler.join().expect("sampler"),
        )
    };
    Measured {
        stores: n,
        threads,
        threads_writing: writing,
        bytes_per_store: (rss_open.saturating_sub(rss_before) * 1024) as f64 / n as f64,
        writes_per_second: writes as f64 / took.as_secs_f64(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let side = &args[i + 1];
        let root = PathBuf::from(&args[i + 2]);
        let n: usize = args[i + 3].parse().expect("count");
        let seconds = Duration::from_millis(args[i + 4].parse().expect("millis"));
        let m = child(side, &root, n, seconds);
        println!("{}", serde_json::to_string(&m).expect("json"));
        return;
    }
    let counts = counts();
    let root = scratch().join("open");
    let most = counts.iter().copied().max().unwrap_or(0);
    eprintln!(
        "open_stores: creating {most} user stores under {}",
        root.display()
    );
    let start = Instant::now();
    create(&root, most);
    eprintln!(
        "open_stores: created in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // The writes pool's size, for the reference's threads.
    let pool = (std::thread::available_parallelism().map_or(2, |n| n.get()) * 4).max(8);
    let mut all = serde_json::Map::new();
    for &n in &counts {
        for side in ["store", "rusqlite"] {
            let _ = Command::new("sync").status();
            let out = Command::new(&args[0])
                .args([
                    "--child",
                    side,
                    root.to_str().expect("utf-8 path"),
                    &n.to_string(),
                    &write_for().as_millis().to_string(),
                ])
                .env("MANTISSA_BENCH_POOL", pool.to_string())
                .output()
                .expect("child");
            assert!(
                out.status.success(),
                "{side} child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let m: Measured = serde_json::from_slice(&out.stdout).expect("child's figures");
            eprintln!(
                "open_stores: {n} {side}: {} threads open, {} writing, {:.0} bytes per store, {:.0} writes/s",
                m.threads, m.threads_writing, m.bytes_per_store, m.writes_per_second
            );
            all.insert(
                format!("{side}_{n}"),
                serde_json::to_value(&m).expect("json"),
            );
        }
    }
    write_extra("open_stores", serde_json::Value::Object(all));
    let _ = std::fs::remove_dir_all(scratch());
}
