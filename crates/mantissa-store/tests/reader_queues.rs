//! Reads go to the reader queue their thread chose, and reads queued
//! together share a transaction without missing a write. In a test binary
//! of its own: a test elsewhere that holds every reader thread of a queue
//! busy would send these reads to tokio's blocking pool instead, as it
//! should.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mantissa_store::{Item, Site, use_reader_queue};

/// The tests here take turns: one that keeps the queues full could make the
/// other's reads spill to tokio's blocking pool.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Item)]
#[item(name = "t.queues.counter", version = 1)]
struct Counter {
    n: i64,
}

/// A thread that chose a reader queue (as a server's connection threads
/// do, one each) has its reads run by that queue's threads, quick ones too.
#[test]
fn a_thread_s_reads_run_on_the_reader_queue_it_chose() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    let queues = std::thread::available_parallelism().map_or(2, |n| n.get());
    for queue in 0..queues {
        let store = site.store().clone();
        let names = std::thread::spawn(move || {
            use_reader_queue(queue);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut names = Vec::new();
                for _ in 0..6 {
                    let name = store
                        .read(|_| -> mantissa_store::Result<_> {
                            Ok(std::thread::current().name().map(str::to_string))
                        })
                        .await
                        .unwrap();
                    names.push(name.unwrap_or_default());
                }
                names
            })
        })
        .join()
        .unwrap();
        let prefix = format!("store-read-{queue}-");
        assert!(
            names.iter().all(|n| n.starts_with(&prefix)),
            "queue {queue}: read on {names:?}"
        );
    }
}

/// A read from a place whose reads are quick runs on the async thread
/// that awaits it, once that place has been measured; a read that turns
/// out slow sends the next ones from there to the reader threads.
#[test]
fn quick_reads_run_where_they_are_awaited_and_slow_ones_do_not() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    let store = site.store().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let here = std::thread::current().id();
    let slow = Arc::new(AtomicBool::new(false));
    let threads = rt.block_on(async {
        let mut threads = Vec::new();
        for i in 0..100 {
            if i == 20 {
                slow.store(true, Ordering::Relaxed);
            }
            let slow = slow.clone();
            // Apart enough that the reader thread has ended the transaction
            // it shares with the reads that follow within a millisecond
            // (readers.rs, SHARED_FOR) and given its connection back: how
            // many reads a machine fits in that millisecond (all of the
            // first twenty, on a fast one) is not what this test is about.
            std::thread::sleep(std::time::Duration::from_millis(3));
            let thread = store
                .read(move |_| -> mantissa_store::Result<_> {
                    if slow.swap(false, Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Ok(std::thread::current().id())
                })
                .await
                .unwrap();
            threads.push(thread == here);
        }
        threads
    });
    // Measured on a reader thread first; then, known quick, here (once a
    // connection of the store is idle: a reader thread gives its back when
    // the reads sharing its transaction are done); the slow one (here: it was not known to be slow)
    // sends the next to a reader thread, until its weight in the average
    // has faded. (Where the slow one itself ran does not matter: it is
    // measured either way.)
    assert!(!threads[0], "{threads:?}");
    assert!(
        threads[1..20].contains(&true),
        "quick reads run here: {threads:?}"
    );
    assert!(
        !threads[21],
        "the read after the slow one was handed over: {threads:?}"
    );
    assert!(
        threads[22..].contains(&true),
        "quick reads come back: {threads:?}"
    );
}

/// Reads queued together share a transaction (`readers.rs`); each must
/// still see every write that finished before it was asked for. Writers
/// here read back each write at once, while other tasks keep the reader
/// queues full, so that their reads wait in queues with others.
#[test]
fn a_read_sees_the_writes_finished_before_it_was_asked_for_while_reads_share_transactions() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    let store = site.store().clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut busy = Vec::new();
        for _ in 0..8 {
            let (s, stop) = (store.clone(), stop.clone());
            busy.push(tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.read(|r| r.query::<Counter>().count()).await.unwrap();
                    reads += 1;
                }
                reads
            }));
        }
        let mut writers = Vec::new();
        for w in 0..6 {
            let s = store.clone();
            writers.push(tokio::spawn(async move {
                let id = s.write(|tx| tx.insert(&Counter { n: 0 })).await.unwrap();
                for n in 1..=40 {
                    s.write(move |tx| {
                        let mut c = tx.get(id)?;
                        c.n = n;
                        tx.update(&c)
                    })
                    .await
                    .unwrap();
                    let seen = s
                        .read(move |r| -> mantissa_store::Result<_> { Ok(r.get(id)?.n) })
                        .await
                        .unwrap();
                    assert_eq!(seen, n, "writer {w} read an older value back");
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let mut reads = 0;
        for b in busy {
            reads += b.await.unwrap();
        }
        assert!(reads > 0);
    });
}
