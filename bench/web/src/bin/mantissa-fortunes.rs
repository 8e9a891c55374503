//! TechEmpower's Fortunes (`/fortunes`) and plaintext (`/plaintext`) on
//! Mantissa's full web stack, with the fortunes as items of a site store
//! created in a temporary folder.
//!
//! ```text
//! mantissa-fortunes [ADDR] [--variant full|handlers|handlers-axum] [--read async|worker|async-4]
//!                   [--store postgres://…]
//! ```
//!
//! `--store` keeps the site's stores in that PostgreSQL database (a node
//! of a site served by several, as `mantissa --store … serve` runs).
//!
//! `full` (the default) with `--read async` (the default) is what is
//! measured against the references. The others find where the time goes:
//! `handlers` serves the same handlers (store query, app templates) on a
//! plain axum router, without any of Mantissa's layers, through
//! `mantissa-server`'s accept loop and `HttpProtocol`; `handlers-axum`
//! serves that plain router with `axum::serve`, without `mantissa-server`
//! either. `--read worker` queries the store with `read_blocking` on the
//! async worker thread instead of `read(..).await` on the blocking pool;
//! `--read async-4` lets at most four `read(..).await` run at once.

use std::sync::Arc;

use axum::serve::ListenerExt;
use mantissa_bench_web::{
    StoreRead, bench_limits, fortune_site_on, handlers_only_router, init_logging, listen_arg,
    mantissa_app, mantissa_routes, option_arg, stop_signal,
};
use mantissa_server::{Guard, Protocol};
use mantissa_web::{HttpProtocol, site_server};

/// The allocator of the `mantissa` binary (see its `main.rs`), so that
/// what is measured is what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    init_logging();
    let addr = listen_arg("127.0.0.1:8081")?;
    let variant = option_arg("--variant").unwrap_or_else(|| "full".into());
    let read = match option_arg("--read").as_deref() {
        None | Some("async") => StoreRead::Async,
        Some("worker") => StoreRead::OnWorker,
        Some("async-4") => StoreRead::AsyncAtMost4,
        Some(other) => anyhow::bail!("unknown --read {other:?} (async, worker, async-4)"),
    };
    let dir = tempfile::tempdir()?;
    let store = option_arg("--store");
    let site = fortune_site_on(dir.path(), store.as_deref())?;
    let guard = Guard::new(bench_limits());
    let app = mantissa_app(site, guard.clone())?;
    if !matches!(variant.as_str(), "full" | "handlers" | "handlers-axum") {
        anyhow::bail!("unknown variant {variant:?} (full, handlers, handlers-axum)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let app_for_runtime = app.clone();
    runtime.block_on(async move {
        let app = app_for_runtime;
        let label = format!("mantissa-fortunes ({variant}, {read:?} read)");
        if variant == "full" {
            let service = app.router_with(mantissa_routes(read));
            serve(guard, addr, HttpProtocol::new(service), &label).await?;
        } else if variant == "handlers" {
            let router = handlers_only_router(&app, read);
            serve(guard, addr, HttpProtocol::new(router), &label).await?;
        } else {
            let router = handlers_only_router(&app, read);
            let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            println!("{label} on http://{addr}/");
            axum::serve(listener, router)
                .with_graceful_shutdown(stop_signal())
                .await?;
        }
        anyhow::Ok(())
    })?;
    drop(app);
    drop(dir);
    Ok(())
}

/// Serves `proto` through `mantissa-server`'s accept loop until stopped,
/// on a site's server as `mantissa serve` makes it (each connection thread
/// with a store reader queue of its own).
async fn serve(
    guard: Guard,
    addr: std::net::SocketAddr,
    proto: impl Protocol + 'static,
    label: &str,
) -> anyhow::Result<()> {
    let mut server = site_server(guard);
    let bound = server.listen(addr, None, Arc::new(proto)).await?;
    println!("{label} on http://{bound}/");
    server.run(stop_signal()).await;
    Ok(())
}
