//! Web benchmarks for Mantissa: TechEmpower's "Fortunes" and "plaintext"
//! tests served by Mantissa's full web stack, beside a minimal axum +
//! rusqlite reference and bare hyper. `bench/web.sh` builds the three
//! binaries, loads them with `wrk` and prints the ratios; `bench/README.md`
//! ("Web") holds the figures.
//!
//! Everything the binaries share lives here, so that the test in
//! `tests/fortunes.rs` checks exactly what is measured.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use mantissa_server::{Guard, Limits};
use mantissa_store::{Item, Site};
use mantissa_web::{App, Page, WebError, WebOptions};

/// TechEmpower's twelve fortunes, with their ids.
pub const FORTUNES: [(i64, &str); 12] = [
    (1, "fortune: No such file or directory"),
    (
        2,
        "A computer scientist is someone who fixes things that aren't broken.",
    ),
    (3, "After enough decimal places, nobody gives a damn."),
    (
        4,
        "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    ),
    (
        5,
        "A computer program does what you tell it to do, not what you want it to do.",
    ),
    (
        6,
        "Emacs is a nice operating system, but I prefer UNIX. \u{2014} Tom Christaensen",
    ),
    (7, "Any program that runs right is obsolete."),
    (
        8,
        "A list is only as strong as its weakest link. \u{2014} Donald Knuth",
    ),
    (9, "Feature: A bug with seniority."),
    (10, "Computers make very fast, very accurate mistakes."),
    (
        11,
        "<script>alert(\"This should not be displayed in a browser alert box.\");</script>",
    ),
    (12, "フレームワークのベンチマーク"),
];

/// The row every request adds before sorting, with id 0.
pub const EXTRA_FORTUNE: &str = "Additional fortune added at request time.";

/// The page's template (minijinja), TechEmpower's markup on one line.
pub const TEMPLATE: &str = include_str!("../templates/fortunes.html");

/// The answer of the plaintext test.
pub const HELLO: &str = "Hello, World!";

/// The rows of one request: `rows` plus the extra one, sorted by message.
pub fn with_extra_sorted(mut rows: Vec<(i64, String)>) -> Vec<(i64, String)> {
    rows.push((0, EXTRA_FORTUNE.to_string()));
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows
}

/// Escapes text for HTML exactly as minijinja's autoescape does (`& < > " '
/// /`), so the reference and Mantissa send the same bytes.
pub fn escape_into(out: &mut String, text: &str) {
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#x27;",
            b'/' => "&#x2f;",
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&text[last..]);
}

/// The Fortunes page written by hand (the reference's renderer): the same
/// markup as [`TEMPLATE`], escaped with [`escape_into`].
pub fn render_by_hand(rows: &[(i64, String)]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2048);
    out.push_str("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>");
    for (id, message) in rows {
        let _ = write!(out, "<tr><td>{id}</td><td>");
        escape_into(&mut out, message);
        out.push_str("</td></tr>");
    }
    out.push_str("</table></body></html>");
    out
}

/// A fortune, as an item of the site store.
#[derive(Item, Debug, Clone)]
#[item(name = "bench.fortune", version = 1)]
pub struct Fortune {
    /// The text.
    pub message: String,
}

/// Limits for a benchmark: the defaults, except that one address (the load
/// generator) may send as fast as it can, with as many requests in flight
/// as it has connections.
pub fn bench_limits() -> Limits {
    Limits {
        requests_per_second_per_ip: 1_000_000,
        request_burst_per_ip: 1_000_000,
        max_in_flight: 100_000,
        max_in_flight_per_ip: 100_000,
        ..Limits::default()
    }
}

/// Opens (creating) the site in `dir` and stores the twelve fortunes in its
/// site store, unless they are there already. Blocking: call it before the
/// runtime runs, or from a blocking thread.
pub fn fortune_site(dir: &Path) -> anyhow::Result<Site> {
    fortune_site_on(dir, None)
}

/// [`fortune_site`], with the site's stores in the PostgreSQL database at
/// `store` when one is given (as `mantissa serve --store` has them).
pub fn fortune_site_on(dir: &Path, store: Option<&str>) -> anyhow::Result<Site> {
    let site = match store {
        Some(url) => Site::open_postgres(dir, url)?,
        None => Site::open(dir)?,
    };
    site.store()
        .write_blocking(|tx| -> mantissa_store::Result<_> {
            if tx.query::<Fortune>().count()? == 0 {
                for (_, message) in FORTUNES {
                    tx.insert(&Fortune {
                        message: message.to_string(),
                    })?;
                }
            }
            Ok(())
        })?;
    Ok(site)
}

/// The Mantissa web application of `site`, with the Fortunes template.
pub fn mantissa_app(site: Site, guard: Guard) -> anyhow::Result<App> {
    Ok(App::new(
        site,
        guard,
        WebOptions {
            dev: false,
            templates: vec![("fortunes.html".into(), TEMPLATE)],
            ..WebOptions::default()
        },
    )?)
}

/// How Mantissa's handlers read the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreRead {
    /// `Store::read(..).await`: on tokio's blocking pool, as the store's
    /// documentation says handlers should.
    Async,
    /// `Store::read_blocking` on the async worker thread (an experiment: it
    /// is what the reference's `--query worker` does).
    OnWorker,
    /// `Store::read(..).await` with at most four reads at once (an
    /// experiment: the store keeps four idle reader connections, and opens
    /// and closes others when more reads run at once).
    AsyncAtMost4,
}

/// The rows of one request, from the site store.
async fn fortune_rows(app: &App, how: StoreRead) -> Result<Vec<(i64, String)>, WebError> {
    let stored = match how {
        StoreRead::Async => {
            app.site()
                .store()
                .read(|r| r.query::<Fortune>().all())
                .await?
        }
        StoreRead::OnWorker => app
            .site()
            .store()
            .read_blocking(|r| r.query::<Fortune>().all())?,
        StoreRead::AsyncAtMost4 => {
            static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
            let _permit = READS
                .acquire()
                .await
                .map_err(|e| WebError::Internal(e.to_string()))?;
            app.site()
                .store()
                .read(|r| r.query::<Fortune>().all())
                .await?
        }
    };
    Ok(with_extra_sorted(
        stored
            .into_iter()
            .map(|s| (s.id().id(), s.into_inner().message))
            .collect(),
    ))
}

/// The page's data, as an application declares it.
#[derive(serde::Serialize)]
pub struct FortunesData<'a> {
    fortunes: Vec<FortuneRow<'a>>,
}

#[derive(serde::Serialize)]
struct FortuneRow<'a> {
    id: i64,
    message: &'a str,
}

/// The data of the page for `rows`, as `/fortunes` hands it to [`Page`].
pub fn page_data(rows: &[(i64, String)]) -> FortunesData<'_> {
    FortunesData {
        fortunes: rows
            .iter()
            .map(|(id, message)| FortuneRow { id: *id, message })
            .collect(),
    }
}

/// `/fortunes` as an application writes it: a [`Page`] the stack renders.
pub async fn fortunes_page(State(app): State<App>) -> Result<Page, WebError> {
    let rows = fortune_rows(&app, StoreRead::Async).await?;
    Ok(Page::new("fortunes.html", page_data(&rows)))
}

async fn fortunes_page_on_worker(State(app): State<App>) -> Result<Page, WebError> {
    let rows = fortune_rows(&app, StoreRead::OnWorker).await?;
    Ok(Page::new("fortunes.html", page_data(&rows)))
}

async fn fortunes_page_at_most_4(State(app): State<App>) -> Result<Page, WebError> {
    let rows = fortune_rows(&app, StoreRead::AsyncAtMost4).await?;
    Ok(Page::new("fortunes.html", page_data(&rows)))
}

/// `/plaintext`.
pub async fn plaintext() -> &'static str {
    HELLO
}

/// The routes the benchmark adds to Mantissa's: merged below every layer by
/// [`App::router_with`].
pub fn mantissa_routes(how: StoreRead) -> Router<App> {
    let fortunes = match how {
        StoreRead::Async => get(fortunes_page),
        StoreRead::OnWorker => get(fortunes_page_on_worker),
        StoreRead::AsyncAtMost4 => get(fortunes_page_at_most_4),
    };
    Router::new()
        .route("/fortunes", fortunes)
        .route("/plaintext", get(plaintext))
}

/// Mantissa's full stack: every route and layer, plus [`mantissa_routes`].
pub fn mantissa_router(app: &App) -> mantissa_web::WebService {
    app.router_with(mantissa_routes(StoreRead::Async))
}

/// `/fortunes` without the stack's page renderer: the same store query,
/// rendered here with the app's template engine.
async fn fortunes_rendered_here(State((app, how)): State<(App, StoreRead)>) -> Response {
    let rows = match fortune_rows(&app, how).await {
        Ok(rows) => rows,
        Err(e) => return e.into_response(),
    };
    let ctx = minijinja::Value::from_serialize(page_data(&rows));
    match app.templates().render("fortunes.html", &ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// For finding where the time goes: the same two handlers on a plain axum
/// router, without any of Mantissa's layers (no guard, security headers,
/// sessions, CSRF, conditional GET, compression, access log or page
/// renderer), still using the site store and the app's templates.
pub fn handlers_only_router(app: &App, how: StoreRead) -> Router {
    Router::new()
        .route("/fortunes", get(fortunes_rendered_here))
        .route("/plaintext", get(plaintext))
        .with_state((app.clone(), how))
}

/// The reference's pool: idle SQLite connections to the fortune database.
pub struct Pool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Pool {
    /// Creates the database at `path` (WAL) with the twelve rows, and a pool
    /// of connections to it.
    pub fn create(path: &Path) -> rusqlite::Result<Arc<Pool>> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS fortune (id INTEGER PRIMARY KEY, message TEXT NOT NULL)",
        )?;
        let tx = conn.unchecked_transaction()?;
        for (id, message) in FORTUNES {
            tx.execute(
                "INSERT OR REPLACE INTO fortune (id, message) VALUES (?1, ?2)",
                rusqlite::params![id, message],
            )?;
        }
        tx.commit()?;
        Ok(Arc::new(Pool {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![conn]),
        }))
    }

    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    /// All rows, on a pooled connection.
    pub fn rows(&self) -> rusqlite::Result<Vec<(i64, String)>> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open()?,
        };
        let rows = query_rows(&conn);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        rows
    }

    /// All rows, on this thread's own connection (opened on first use).
    pub fn rows_on_thread(self: &Arc<Self>) -> rusqlite::Result<Vec<(i64, String)>> {
        thread_local! {
            static CONN: RefCell<Option<rusqlite::Connection>> = const { RefCell::new(None) };
        }
        CONN.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(self.open()?);
            }
            query_rows(c.as_ref().expect("just opened"))
        })
    }
}

fn query_rows(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached("SELECT id, message FROM fortune")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How the reference runs its query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryOn {
    /// On tokio's blocking pool with a pooled connection, as deadpool-sqlite
    /// or `tokio-rusqlite` would (and as Mantissa's store does).
    BlockingPool,
    /// Directly on the async worker thread, with a connection per thread: the
    /// fastest way with SQLite when a query takes microseconds.
    WorkerThread,
}

#[derive(Clone)]
struct Reference {
    pool: Arc<Pool>,
    on: QueryOn,
}

async fn reference_fortunes(State(r): State<Reference>) -> Response {
    let rows = match r.on {
        QueryOn::BlockingPool => {
            let pool = r.pool.clone();
            match tokio::task::spawn_blocking(move || pool.rows()).await {
                Ok(rows) => rows,
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
                }
            }
        }
        QueryOn::WorkerThread => r.pool.rows_on_thread(),
    };
    match rows {
        Ok(rows) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render_by_hand(&with_extra_sorted(rows)),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The reference: axum with two routes, rusqlite, no middleware.
pub fn reference_router(pool: Arc<Pool>, on: QueryOn) -> Router {
    Router::new()
        .route("/fortunes", get(reference_fortunes))
        .route("/plaintext", get(plaintext))
        .with_state(Reference { pool, on })
}

/// The reference on PostgreSQL: axum, deadpool-postgres and
/// tokio-postgres, as their documentation has them, no middleware; the
/// same page written by hand.
pub async fn pg_reference_router(url: &str) -> anyhow::Result<Router> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(32)
        .build()?;
    let client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fortune (id INTEGER PRIMARY KEY, message TEXT NOT NULL)",
        )
        .await?;
    for (id, message) in FORTUNES {
        client
            .execute(
                "INSERT INTO fortune (id, message) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&(id as i32), &message],
            )
            .await?;
    }
    drop(client);
    Ok(Router::new()
        .route("/fortunes", get(pg_reference_fortunes))
        .route("/plaintext", get(plaintext))
        .with_state(pool))
}

async fn pg_reference_fortunes(State(pool): State<deadpool_postgres::Pool>) -> Response {
    let rows = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        let stmt = client
            .prepare_cached("SELECT id, message FROM fortune")
            .await
            .map_err(|e| e.to_string())?;
        let rows = client.query(&stmt, &[]).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(
            rows.iter()
                .map(|r| (i64::from(r.get::<_, i32>(0)), r.get::<_, String>(1)))
                .collect::<Vec<_>>(),
        )
    }
    .await;
    match rows {
        Ok(rows) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render_by_hand(&with_extra_sorted(rows)),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The listening address from the first argument, or `default`.
pub fn listen_arg(default: &str) -> anyhow::Result<SocketAddr> {
    let a = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default.to_string());
    a.parse()
        .map_err(|e| anyhow::anyhow!("bad listening address {a:?}: {e}"))
}

/// The value of option `--name VALUE` among the arguments, if given.
pub fn option_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Logs as the `mantissa` binary does: warnings and errors only, unless
/// `MANTISSA_LOG` says otherwise.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MANTISSA_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
