//! The page measured is the right page: Mantissa's `/fortunes` has the 13
//! rows, sorted, with the script escaped, and is the same HTML as the
//! reference's; `/plaintext` says hello on both.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use mantissa_bench_web::{
    EXTRA_FORTUNE, FORTUNES, Pool, QueryOn, StoreRead, bench_limits, fortune_site,
    handlers_only_router, mantissa_app, mantissa_router, reference_router,
};
use mantissa_server::Guard;
use tower::ServiceExt;

async fn get<S, B>(router: &S, path: &str) -> (StatusCode, String, String)
where
    S: tower::Service<Request<Body>, Response = axum::http::Response<B>, Error = Infallible>
        + Clone,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let r = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(Body::new(r.into_body()), 1 << 20)
        .await
        .unwrap();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

/// The `(id, message)` cells of the page's rows, unescaped.
fn cells(html: &str) -> Vec<(i64, String)> {
    html.split("<tr><td>")
        .skip(1)
        .map(|row| {
            let (id, rest) = row.split_once("</td><td>").unwrap();
            let message = rest.split_once("</td></tr>").unwrap().0;
            let message = message
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&#x2f;", "/")
                .replace("&amp;", "&");
            (id.parse().unwrap(), message)
        })
        .collect()
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mantissa_and_reference_send_the_same_correct_page() {
    let dir = tempfile::tempdir().unwrap();
    // The store's blocking calls must not run on an async worker.
    let path = dir.path().to_path_buf();
    let app = tokio::task::spawn_blocking(move || {
        mantissa_app(fortune_site(&path)?, Guard::new(bench_limits()))
    })
    .await
    .unwrap()
    .unwrap();
    let mantissa = mantissa_router(&app);
    let pool = Pool::create(&dir.path().join("reference.sqlite")).unwrap();

    let (status, ct, page) = get(&mantissa, "/fortunes").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(page.starts_with("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>"));
    assert!(page.trim_end().ends_with("</table></body></html>"));
    assert!(!page.contains("<script>"), "the script must be escaped");
    assert!(page.contains("&lt;script&gt;alert(&quot;This should not be displayed in a browser alert box.&quot;);&lt;&#x2f;script&gt;"));

    let rows = cells(&page);
    let mut expected: Vec<(i64, String)> = FORTUNES
        .iter()
        .map(|(id, m)| (*id, m.to_string()))
        .chain([(0, EXTRA_FORTUNE.to_string())])
        .collect();
    expected.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(rows.len(), 13);
    assert_eq!(
        rows, expected,
        "13 rows, the store's ids, sorted by message"
    );
    assert_eq!(rows.last().unwrap().1, "フレームワークのベンチマーク");

    for on in [QueryOn::BlockingPool, QueryOn::WorkerThread] {
        let reference = reference_router(pool.clone(), on);
        let (status, ct, reference_page) = get(&reference, "/fortunes").await;
        assert_eq!(status, StatusCode::OK);
        assert!(ct.starts_with("text/html"), "{ct}");
        assert_eq!(squeeze(&page), squeeze(&reference_page), "{on:?}");
    }

    let (_, _, handlers_page) =
        get(&handlers_only_router(&app, StoreRead::Async), "/fortunes").await;
    assert_eq!(squeeze(&page), squeeze(&handlers_page));

    let (status, ct, hello) = get(&mantissa, "/plaintext").await;
    assert_eq!((status, hello.as_str()), (StatusCode::OK, "Hello, World!"));
    assert!(ct.starts_with("text/plain"), "{ct}");
    let (_, _, hello) = get(&reference_router(pool, QueryOn::WorkerThread), "/plaintext").await;
    assert_eq!(hello, "Hello, World!");
}
