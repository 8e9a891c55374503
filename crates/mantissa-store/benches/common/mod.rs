//! What the store's benchmarks share: the scratch folder, the extra figures
//! file `bench/run` reads, and the plain rusqlite connection every
//! reference uses.

#![allow(dead_code)] // each benchmark uses its own part

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The folder that holds every site and file of this run (removed by
/// `main` at the end).
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("MANTISSA_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).expect("bench dir");
        tempfile::Builder::new()
            .prefix("mantissa-bench-")
            .tempdir_in(base)
            .expect("temporary folder")
            .keep()
    })
}

/// Where extra figures that criterion does not keep (setup time, per-open
/// percentiles) are written for `bench/run`.
pub fn extra_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("criterion").join("mantissa-store-extra.json")
}

pub fn write_extra(key: &str, value: serde_json::Value) {
    let path = extra_path();
    let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.insert(key.to_string(), value);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&path, serde_json::to_vec_pretty(&all).unwrap_or_default());
}

/// Flushes the files earlier benchmarks wrote, so that their write-back does
/// not stall the `fsync`s measured next.
pub fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

/// Opens a file the way a careful application would: WAL, full sync, a busy
/// timeout and a statement cache (the store's settings).
pub fn plain_open(path: &Path, create: bool) -> Connection {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).expect("open");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("journal mode");
    assert!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; PRAGMA recursive_triggers = ON;",
    )
    .expect("pragmas");
    conn
}

/// CPU time (in clock ticks) spent by every process, and by this one.
#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    at: std::time::Instant,
    all_busy: u64,
    own: u64,
}

pub fn cpu_snapshot() -> CpuSnapshot {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal ...
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let all_busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After "pid (comm) ": state is field 3, utime 14 and stime 15.
    let after = own_stat.rsplit(')').next().unwrap_or_default();
    let g: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let own = g.get(11).copied().unwrap_or(0) + g.get(12).copied().unwrap_or(0);
    CpuSnapshot {
        at: std::time::Instant::now(),
        all_busy,
        own,
    }
}

/// Records how many cores other processes kept busy since `start`: other
/// work on the machine skews the ratios, and `bench/run` warns about it.
/// (A PostgreSQL server counts as another process: the PostgreSQL groups'
/// figure includes the server's work for both sides.)
pub fn note_other_cpu(bench: &str, start: CpuSnapshot) {
    let end = cpu_snapshot();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let secs = end.at.duration_since(start.at).as_secs_f64().max(1e-3);
    let others = end.all_busy.saturating_sub(start.all_busy) as f64
        - end.own.saturating_sub(start.own) as f64;
    write_extra(
        &format!("other_cpu_{bench}"),
        serde_json::json!((others / ticks_per_sec / secs).max(0.0)),
    );
}

/// Which side of a comparison an operation runs on: the store, or the
/// reference written directly on the engine's driver.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Store,
    Reference,
}

/// What a paired group measured besides criterion's own figures.
#[derive(Default)]
pub struct Paired {
    /// The reference's name ("rusqlite", "tokio-postgres").
    reference: &'static str,
    /// (store, reference) time over the same interleaved iterations, one
    /// pair per criterion sample.
    samples: Vec<(Duration, Duration)>,
    store_ops: Vec<Duration>,
    reference_ops: Vec<Duration>,
}

/// Runs a criterion benchmark for each side of `op` (which runs one
/// iteration on the side it is given, and returns the time of just the
/// measured work), the reference's called `reference`. Within every sample
/// the two sides alternate, iteration by iteration, whichever is being
/// measured: both see the same machine, so other work on it moves both, and
/// the pairs give a ratio that it does not skew. `make` builds what both
/// sides use, once, outside criterion's clock and only if the benchmark is
/// selected.
pub fn paired<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    reference: &'static str,
    mut make: impl FnMut() -> S,
    mut op: impl FnMut(&mut S, Side) -> Duration,
) -> Paired {
    let mut out = Paired {
        reference,
        ..Paired::default()
    };
    let mut state: Option<S> = None;
    for side in [Side::Store, Side::Reference] {
        let name = match side {
            Side::Store => "store",
            Side::Reference => reference,
        };
        g.bench_function(name, |b| {
            let state = state.get_or_insert_with(&mut make);
            b.iter_custom(|iters| {
                let (mut store, mut plain) = (Duration::ZERO, Duration::ZERO);
                for i in 0..iters {
                    let order = if i % 2 == 0 {
                        [Side::Store, Side::Reference]
                    } else {
                        [Side::Reference, Side::Store]
                    };
                    for s in order {
                        let took = op(state, s);
                        if s == Side::Store {
                            store += took;
                            out.store_ops.push(took);
                        } else {
                            plain += took;
                            out.reference_ops.push(took);
                        }
                    }
                }
                out.samples.push((store, plain));
                if side == Side::Store { store } else { plain }
            });
        });
    }
    out
}

fn percentiles(mut times: Vec<Duration>) -> serde_json::Value {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    serde_json::json!({
        "count": times.len(),
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "max_ms": at(1.0),
    })
}

/// Records the paired ratio (the median over samples of reference time /
/// store time: the store's speed relative to the reference) and the
/// per-operation percentiles, each side's under its name.
pub fn write_paired(group: &str, p: Paired) {
    if p.samples.is_empty() {
        return;
    }
    let mut ratios: Vec<f64> = p
        .samples
        .iter()
        .filter(|(s, _)| !s.is_zero())
        .map(|(s, r)| r.as_secs_f64() / s.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
    let mut figures = serde_json::json!({
        "ratio_median": median,
        "samples": ratios.len(),
        "reference": p.reference,
        "store": percentiles(p.store_ops),
    });
    figures[p.reference] = percentiles(p.reference_ops);
    write_extra(&format!("paired_{group}"), figures);
}

/// A group whose iteration is one operation: ten samples after a second's
/// warm-up, each side measured for `measure`.
pub fn one_at_a_time<'c>(
    c: &'c mut criterion::Criterion,
    group: &str,
    measure: Duration,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measure)
        .throughput(criterion::Throughput::Elements(1));
    g
}
