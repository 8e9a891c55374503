//! The reference for Fortunes on PostgreSQL: axum 0.8, deadpool-postgres
//! and tokio-postgres, no middleware; the twelve fortunes in a `fortune`
//! table of the database given; the page written by hand with
//! `mantissa_bench_web::escape_into`, as the SQLite reference does.
//!
//! ```text
//! reference-pg-fortunes [ADDR] --db postgres://…
//! ```

use axum::serve::ListenerExt;
use mantissa_bench_web::{listen_arg, option_arg, pg_reference_router, stop_signal};

fn main() -> anyhow::Result<()> {
    let addr = listen_arg("127.0.0.1:8083")?;
    let Some(url) = option_arg("--db") else {
        anyhow::bail!("usage: reference-pg-fortunes [ADDR] --db postgres://…");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let router = pg_reference_router(&url).await?;
        let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        println!("reference-pg-fortunes on http://{addr}/");
        axum::serve(listener, router)
            .with_graceful_shutdown(stop_signal())
            .await?;
        anyhow::Ok(())
    })
}
