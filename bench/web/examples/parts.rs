//! Where a request's time goes, without a network: each part of the
//! Fortunes and plaintext paths timed on its own, in process, one operation
//! after another.
//!
//! ```text
//! cargo run --release -p mantissa-bench-web --example parts [SECONDS_PER_PART]
//! ```
//!
//! For each part it prints the wall time per operation and the CPU time per
//! operation of the whole process (all threads: what a loaded server pays
//! for it, including thread hand-offs), from /proc/self/stat.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::routing::get;
use mantissa_bench_web::{
    Fortune, Pool, QueryOn, StoreRead, bench_limits, fortune_site, handlers_only_router,
    mantissa_app, mantissa_router, page_data, plaintext, reference_router, render_by_hand,
    with_extra_sorted,
};
use mantissa_server::Guard;
use mantissa_web::ClientInfo;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = s
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let t = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    t(11) + t(12)
}

/// Clock ticks per second (USER_HZ; 100 on Linux everywhere that matters).
const HZ: f64 = 100.0;

struct Timer {
    budget: Duration,
}

impl Timer {
    fn report(&self, name: &str, n: u64, wall: Duration, ticks: u64) {
        let wall_us = wall.as_secs_f64() * 1e6 / n as f64;
        let cpu_us = ticks as f64 / HZ * 1e6 / n as f64;
        println!("{name:58} {wall_us:9.2} µs wall {cpu_us:9.2} µs cpu  ({n} ops)");
    }

    fn sync(&self, name: &str, mut f: impl FnMut()) {
        for _ in 0..200 {
            f();
        }
        let (start, t0) = (Instant::now(), cpu_ticks());
        let mut n = 0;
        while start.elapsed() < self.budget {
            for _ in 0..100 {
                f();
            }
            n += 100;
        }
        self.report(name, n, start.elapsed(), cpu_ticks() - t0);
    }

    async fn run<F, Fut>(&self, name: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        for _ in 0..200 {
            f().await;
        }
        let (start, t0) = (Instant::now(), cpu_ticks());
        let mut n = 0;
        while start.elapsed() < self.budget {
            for _ in 0..100 {
                f().await;
            }
            n += 100;
        }
        self.report(name, n, start.elapsed(), cpu_ticks() - t0);
    }
}

/// `f` run by two tasks at once on the two-worker runtime, for the
/// budget; reports per operation (wall time is per operation of both).
async fn parallel<F, Fut>(t: &Timer, name: &str, f: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let budget = t.budget;
    let (start, t0) = (Instant::now(), cpu_ticks());
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < budget {
                    for _ in 0..100 {
                        f().await;
                    }
                    n += 100;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for task in tasks {
        n += task.await.expect("task");
    }
    t.report(name, n, start.elapsed(), cpu_ticks() - t0);
}

fn request(path: &str) -> Request {
    let mut r = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .expect("request");
    r.extensions_mut().insert(ClientInfo {
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        tls: false,
    });
    r
}

/// Any of the services measured, behind one type (the same box for each).
type Boxed =
    tower::util::BoxCloneSyncService<Request, axum::response::Response, std::convert::Infallible>;

fn boxed<S, B>(service: S) -> Boxed
where
    S: tower::Service<
            Request,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    Boxed::new(service.map_response(|r| r.map(Body::new)))
}

async fn call<S, B>(router: &S, path: &str)
where
    S: tower::Service<
            Request,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let r = router
        .clone()
        .oneshot(request(path))
        .await
        .expect("infallible");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    black_box(
        axum::body::to_bytes(Body::new(r.into_body()), 1 << 20)
            .await
            .expect("body"),
    );
}

async fn noop(req: Request, next: Next) -> axum::response::Response {
    next.run(req).await
}

async fn noop_with_state(
    axum::extract::State(app): axum::extract::State<mantissa_web::App>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    black_box(&app);
    next.run(req).await
}

fn main() -> anyhow::Result<()> {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1.0);
    let t = Timer {
        budget: Duration::from_secs_f64(secs),
    };
    let dir = tempfile::tempdir()?;
    let site = fortune_site(dir.path())?;
    let guard = Guard::new(bench_limits());
    let app = mantissa_app(site, guard.clone())?;
    let pool = Pool::create(&dir.path().join("reference.sqlite"))?;
    let store = app.site().store().clone();

    println!("-- the query (12 rows), on the calling thread");
    t.sync(
        "mantissa store: read_blocking(query::<Fortune>().all())",
        || {
            black_box(
                store
                    .read_blocking(|r| r.query::<Fortune>().all())
                    .expect("read"),
            );
        },
    );
    t.sync("rusqlite: prepare_cached + query_map", || {
        black_box(pool.rows().expect("rows"));
    });

    let rows = with_extra_sorted(pool.rows()?);
    println!("-- rendering the page (13 rows)");
    t.sync("by hand (reference)", || {
        black_box(render_by_hand(black_box(&rows)));
    });
    t.sync(
        "rows -> the Page's data (minijinja Value from Serialize)",
        || {
            black_box(minijinja::Value::from_serialize(page_data(&rows)));
        },
    );
    let data = minijinja::Value::from_serialize(page_data(&rows));
    t.sync("app.templates().render(data)", || {
        let ctx = data.clone();
        black_box(
            app.templates()
                .render("fortunes.html", &ctx)
                .expect("render"),
        );
    });
    t.sync("  same, with render_pages' context (site, path, csrf)", || {
        let config = app.config();
        let ctx = minijinja::context! {
            site => minijinja::Value::from_serialize(config.public()),
            path => "/fortunes",
            csrf_field => minijinja::Value::from_function(move || minijinja::Value::from_safe_string(String::new())),
            ..data.clone()
        };
        black_box(app.templates().render("fortunes.html", &ctx).expect("render"));
    });
    let page = render_by_hand(&rows);

    println!("-- per-request work of the layers, one by one");
    let ip = "127.0.0.1".parse()?;
    t.sync(
        "guard.begin_request(ip) + drop (governor, in-flight count)",
        || {
            // A tight loop outruns even the lifted rate limit; refusals cost the same.
            let _ = black_box(guard.begin_request(ip));
        },
    );
    t.sync("app.config() (SiteConfig clone, render_pages)", || {
        black_box(app.config());
    });
    t.sync("random_token() (CSRF token, every request)", || {
        black_box(mantissa_web::random_token());
    });
    t.sync("XXH3-128 of the page + hex ETag (conditional GET)", || {
        let h = xxhash_rust::xxh3::xxh3_128(black_box(page.as_bytes()));
        black_box(format!("\"{h:032x}\""));
    });
    t.sync("  SHA-256 instead (what the ETag was before)", || {
        let d = Sha256::digest(black_box(page.as_bytes()));
        black_box(
            d[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
    });
    t.sync("httpdate::fmt_http_date (Last-Modified)", || {
        black_box(httpdate::fmt_http_date(std::time::SystemTime::now()));
    });
    // What the access log did before it kept its own duration buckets
    // (mantissa-web's observe.rs): looked a counter up by label, and pushed
    // every duration onto the recorder's histogram.
    t.sync("metrics crate: counter by label + histogram sample", || {
        metrics::counter!("mantissa_http_requests_total", "status" => "2xx").increment(1);
        metrics::histogram!("mantissa_http_request_seconds").record(0.000_1);
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("-- the query through the async runtime (multi-thread, 2 workers)");
        t.run(
            "mantissa store: read(...).await (reader threads)",
            || async {
                black_box(
                    store
                        .read(|r| r.query::<Fortune>().all())
                        .await
                        .expect("read"),
                );
            },
        )
        .await;
        t.run("rusqlite pool via spawn_blocking (reference)", || async {
            let p = pool.clone();
            black_box(
                tokio::task::spawn_blocking(move || p.rows())
                    .await
                    .expect("join")
                    .expect("rows"),
            );
        })
        .await;
        t.run(
            "rusqlite on the worker thread (reference --query worker)",
            || async {
                black_box(pool.rows_on_thread().expect("rows"));
            },
        )
        .await;

        println!("-- whole requests, in process (Router::oneshot, body collected)");
        let full = mantissa_router(&app);
        let handlers = handlers_only_router(&app, StoreRead::Async);
        let reference = reference_router(pool.clone(), QueryOn::BlockingPool);
        let reference_worker = reference_router(pool.clone(), QueryOn::WorkerThread);
        let bare: Router = Router::new().route("/plaintext", get(plaintext));
        let mut noops: Router = Router::new().route("/plaintext", get(plaintext));
        for _ in 0..12 {
            noops = noops.layer(from_fn(noop));
        }
        let mut stateful: Router = Router::new().route("/plaintext", get(plaintext));
        for _ in 0..12 {
            stateful = stateful.layer(axum::middleware::from_fn_with_state(
                app.clone(),
                noop_with_state,
            ));
        }
        let compressed: Router = Router::new()
            .route("/plaintext", get(plaintext))
            .layer(tower_http::compression::CompressionLayer::new());
        t.run("plaintext: axum router, no layers", || {
            call(&bare, "/plaintext")
        })
        .await;
        t.run("plaintext: + 12 no-op from_fn layers", || {
            call(&noops, "/plaintext")
        })
        .await;
        t.run(
            "plaintext: + 12 no-op from_fn_with_state(App) layers",
            || call(&stateful, "/plaintext"),
        )
        .await;
        t.run("plaintext: + CompressionLayer only", || {
            call(&compressed, "/plaintext")
        })
        .await;
        t.run("plaintext: mantissa full stack", || {
            call(&full, "/plaintext")
        })
        .await;
        t.run("fortunes: reference (spawn_blocking)", || {
            call(&reference, "/fortunes")
        })
        .await;
        t.run("fortunes: reference (query on worker)", || {
            call(&reference_worker, "/fortunes")
        })
        .await;
        t.run("fortunes: mantissa handlers, no layers", || {
            call(&handlers, "/fortunes")
        })
        .await;
        t.run("fortunes: mantissa full stack", || call(&full, "/fortunes"))
            .await;

        println!("-- the same, two tasks at once on the two workers (contention)");
        for (name, router) in [
            ("plaintext: axum router, no layers", boxed(bare.clone())),
            ("plaintext: + 12 no-op from_fn layers", boxed(noops.clone())),
            (
                "plaintext: + 12 no-op from_fn_with_state(App) layers",
                boxed(stateful.clone()),
            ),
            ("plaintext: mantissa full stack", boxed(full.clone())),
        ] {
            parallel(&t, name, move || {
                let r = router.clone();
                async move { call(&r, "/plaintext").await }
            })
            .await;
        }
        for (name, router) in [
            (
                "fortunes: reference (query on worker)",
                boxed(reference_worker.clone()),
            ),
            (
                "fortunes: mantissa handlers, no layers",
                boxed(handlers.clone()),
            ),
            ("fortunes: mantissa full stack", boxed(full.clone())),
        ] {
            parallel(&t, name, move || {
                let r = router.clone();
                async move { call(&r, "/fortunes").await }
            })
            .await;
        }
    });
    drop(app);
    Ok(())
}
