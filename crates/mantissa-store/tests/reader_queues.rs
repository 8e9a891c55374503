//! Reads go to the reader queue their thread chose. In a test binary of its
//! own: a test elsewhere that holds every reader thread of a queue busy
//! would send these reads to tokio's blocking pool instead, as it should.

use mantissa_store::{Site, use_reader_queue};

/// A thread that chose a reader queue (as a server's connection threads
/// do, one each) has its reads run by that queue's threads.
#[test]
fn a_thread_s_reads_run_on_the_reader_queue_it_chose() {
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
                        .read(|_| Ok(std::thread::current().name().map(str::to_string)))
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
