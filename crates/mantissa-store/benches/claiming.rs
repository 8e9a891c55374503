//! Scheduled jobs run by several nodes of one site on PostgreSQL: jobs a
//! second with one node and with three (each a `Site` of its own on the
//! same database, as three `mantissa serve` processes are), and a check
//! that every job ran exactly once.
//!
//! `cargo bench -p mantissa-store --bench claiming` runs 3,000 jobs in 30
//! stores (`MANTISSA_BENCH_JOBS` to change it); under `cargo test`, 60.
//! On a 2-core machine three nodes cannot be three times as fast: they
//! share the cores with each other and with the server. What this shows is
//! that adding nodes does not make work run twice, and what it costs.

use std::time::Instant;

use mantissa_store::*;

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "bench.claim.job", version = 1)]
struct Job {
    runs: i64,
}

impl Scheduled for Job {
    type Error = StoreError;
    fn run(mut me: Stored<Self>, tx: &mut Write<'_>, _now: Timestamp) -> Result<Option<Timestamp>> {
        me.runs += 1;
        tx.update(&me)?;
        Ok(None)
    }
}
scheduled!(Job);

const STORES: usize = 30;

fn jobs() -> usize {
    if !std::env::args().any(|a| a == "--bench") {
        return 60;
    }
    std::env::var("MANTISSA_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// Schedules `jobs` jobs over the stores of a new database, runs them on
/// `nodes` nodes with two threads each, and returns the seconds taken.
fn run(nodes: usize, jobs: usize) -> f64 {
    let url = mantissa_store::testing::postgres_database();
    let dirs: Vec<tempfile::TempDir> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
    let sites: Vec<Site> = dirs
        .iter()
        .map(|d| Site::open_postgres(d.path(), &url).unwrap())
        .collect();
    let t0 = Timestamp::now();
    for s in 0..STORES {
        sites[0]
            .user_store(&format!("store{s}"))
            .unwrap()
            .write_blocking(|tx| -> Result<()> {
                for _ in 0..jobs / STORES {
                    let job = tx.insert(&Job { runs: 0 })?;
                    tx.schedule(job, t0)?;
                }
                Ok(())
            })
            .unwrap();
    }
    let start = Instant::now();
    std::thread::scope(|scope| {
        for site in sites.iter().chain(sites.iter()) {
            scope.spawn(move || {
                // Until nothing is left due anywhere.
                while site.run_due(Timestamp::now()).unwrap().scheduled > 0 {}
            });
        }
    });
    let took = start.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for s in 0..STORES {
        runs.extend(
            sites[nodes - 1]
                .user_store(&format!("store{s}"))
                .unwrap()
                .read_blocking(|r| r.query::<Job>().column(Job::runs))
                .unwrap(),
        );
    }
    assert_eq!(runs.len(), jobs / STORES * STORES);
    assert!(
        runs.iter().all(|&n| n == 1),
        "every job runs once: {} ran twice or more, {} not at all",
        runs.iter().filter(|&&n| n > 1).count(),
        runs.iter().filter(|&&n| n == 0).count()
    );
    took
}

fn main() {
    let jobs = jobs();
    let one = run(1, jobs);
    let three = run(3, jobs);
    let n = (jobs / STORES * STORES) as f64;
    println!(
        "claiming: {n} jobs in {STORES} stores: one node {:.0} jobs/s, three nodes {:.0} jobs/s ({:.2}x); every job ran once",
        n / one,
        n / three,
        one / three
    );
}
