//! What the store's tests, and those of the crates above it, need to run
//! on both engines: a PostgreSQL server, a database of their own on it,
//! and a site on the engine the run asks for (`MANTISSA_TEST_BACKEND`).
//!
//! Not part of the store's API: compiled for its own tests and with the
//! `testing` feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::backend::PgPool;
use crate::{Result, Site};

/// A PostgreSQL server for the tests: `$MANTISSA_TEST_POSTGRES` (which
/// `.ci/test` starts), or else one of this test binary's own, started with
/// `tests/postgres/cluster.sh` and stopped when the binary ends.
pub fn postgres_server() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("MANTISSA_TEST_POSTGRES") {
            return url;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::temp_dir().join(format!("mantissa-pg-test-{}", std::process::id()));
        let out = std::process::Command::new(root.join("tests/postgres/cluster.sh"))
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .expect("tests/postgres/cluster.sh runs");
        assert!(
            out.status.success(),
            "starting PostgreSQL for the tests failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
    .clone()
}

/// A new, empty database on [`postgres_server`], for one test, owned by an
/// ordinary role (`mantissa_test`), as a site's database is: a superuser
/// is not held to row-level security, which keeps stores apart.
pub fn postgres_database() -> String {
    crate::backend::postgres::off_runtime(|| Ok(make_database())).expect("a test database")
}

fn make_database() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = postgres_server();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "t{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
    );
    let admin = PgPool::new(&server, 1).unwrap().get().unwrap();
    static ROLE: OnceLock<()> = OnceLock::new();
    ROLE.get_or_init(|| {
        // Another test binary may make it at the same moment: then it is
        // there, which is all that is wanted.
        let made = admin.batch("CREATE ROLE mantissa_test LOGIN NOSUPERUSER NOBYPASSRLS");
        if let Err(e) = made {
            let there = admin
                .scalar(
                    "SELECT 1 FROM pg_roles WHERE rolname = 'mantissa_test'",
                    &[],
                )
                .unwrap();
            assert!(there.is_some(), "the tests' role cannot be made: {e}");
        }
    });
    admin
        .batch(&format!("CREATE DATABASE {name} OWNER mantissa_test"))
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    let base = base.replacen("postgres://postgres@", "postgres://mantissa_test@", 1);
    format!("{base}/{name}")
}

/// Whether this run's sites are on PostgreSQL (`MANTISSA_TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("MANTISSA_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Opens a site in `dir` on this run's engine ([`on_postgres`]): its files,
/// or a database of its own, made the first time `dir` is opened and the
/// same each time after (a test that reopens its site finds it again). On
/// PostgreSQL, a site already in `dir` as SQLite files is copied into the
/// new database.
pub fn open_site(dir: &Path) -> Result<Site> {
    if !on_postgres() {
        return Site::open(dir);
    }
    static DATABASES: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut databases = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(url) = databases.get(dir) {
        return Site::open_postgres(dir, url);
    }
    let url = postgres_database();
    databases.insert(dir.to_path_buf(), url.clone());
    drop(databases);
    // A site staged as SQLite files (a test's copy of a site from an
    // earlier version) is moved into the database first, as
    // `mantissa migrate --to` would.
    let staged = dir.join(crate::site::SITE_FILE).is_file();
    let site = Site::open_postgres(dir, &url)?;
    if staged {
        let staged = Site::open(dir)?;
        staged.copy_to(&site, false, |_, _, _| {})?;
    }
    Ok(site)
}
