//! The reference for Fortunes and plaintext: axum 0.8 and plain rusqlite,
//! no middleware. The twelve fortunes are in a SQLite file (WAL) in a
//! temporary folder; the page is written by hand with
//! `mantissa_bench_web::escape_into` (no template engine).
//!
//! ```text
//! reference-fortunes [ADDR] [--query blocking|worker]
//! ```
//!
//! `blocking` (the default) runs the query on tokio's blocking pool with a
//! pooled connection, as deadpool-sqlite or tokio-rusqlite do; `worker`
//! runs it directly on the async worker thread with one connection per
//! thread.

use axum::serve::ListenerExt;
use mantissa_bench_web::{Pool, QueryOn, listen_arg, option_arg, reference_router, stop_signal};

fn main() -> anyhow::Result<()> {
    let addr = listen_arg("127.0.0.1:8082")?;
    let on = match option_arg("--query").as_deref() {
        None | Some("blocking") => QueryOn::BlockingPool,
        Some("worker") => QueryOn::WorkerThread,
        Some(other) => anyhow::bail!("unknown --query {other:?} (blocking, worker)"),
    };
    let dir = tempfile::tempdir()?;
    let pool = Pool::create(&dir.path().join("fortunes.sqlite"))?;
    let router = reference_router(pool, on);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        println!("reference-fortunes ({on:?}) on http://{addr}/");
        axum::serve(listener, router)
            .with_graceful_shutdown(stop_signal())
            .await?;
        anyhow::Ok(())
    })?;
    drop(dir);
    Ok(())
}
