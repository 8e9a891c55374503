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
