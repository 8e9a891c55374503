//! The web as a visitor meets it, over real TCP connections to a real
//! server on 127.0.0.1.

use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use mantissa_server::Limits;
use mantissa_testkit::*;
use mantissa_web::{App, Page, Session, SiteConfig, WebOptions};

fn no_routes() -> Router<App> {
    Router::new()
}

fn test_routes() -> Router<App> {
    async fn form() -> Page {
        Page::new("form.html", serde_json::json!({}))
    }
    async fn login(State(app): State<App>, Extension(s): Extension<Session>) -> &'static str {
        s.begin(&app, Some("alice".into()), Duration::from_secs(3600))
            .await
            .unwrap();
        "welcome"
    }
    async fn login_remembered(
        State(app): State<App>,
        Extension(s): Extension<Session>,
    ) -> &'static str {
        s.begin_with(&app, Some("alice".into()), Duration::from_secs(3600), true)
            .await
            .unwrap();
        "welcome back"
    }
    async fn logout(State(app): State<App>, Extension(s): Extension<Session>) -> &'static str {
        s.end(&app).await.unwrap();
        "bye"
    }
    async fn whoami(Extension(s): Extension<Session>) -> String {
        s.user().unwrap_or_else(|| "anonymous".into())
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        "done"
    }
    Router::new()
        .route("/test/form", get(form).post(|| async { "posted" }))
        .route("/test/login", post(login))
        .route("/test/login-remembered", post(login_remembered))
        .route("/test/logout", post(logout))
        .route("/test/whoami", get(whoami))
        .route("/test/slow", get(slow))
        .route("/test/big", get(big))
        .route("/test/titled", post(titled))
}

#[derive(serde::Deserialize)]
struct Titled {
    title: String,
}

/// A handler taking a form with a `title`, through axum's own extractor.
async fn titled(axum::Form(t): axum::Form<Titled>) -> String {
    t.title
}

/// A public JSON answer of 17 MiB.
async fn big() -> axum::response::Response {
    let items: Vec<String> = (0..170_000).map(|i| format!("{i:0>98}")).collect();
    axum::Json(items).into_response()
}

fn with_form_template() -> Setup {
    Setup {
        options: WebOptions {
            templates: vec![(
                "form.html".into(),
                "{% extends \"base.html\" %}{% block main %}<form method=post>{{ csrf_field() }}<button>Go</button></form>{% endblock %}",
            )],
            ..WebOptions::default()
        },
        ..Setup::default()
    }
}

/// A server whose site configuration `change` set.
fn config(change: impl FnOnce(&mut SiteConfig) + 'static) -> Setup {
    Setup {
        before: Box::new(move |site| {
            let mut c = SiteConfig::load_or_init(site).unwrap();
            change(&mut c);
            SiteConfig::save(site, c).unwrap();
        }),
        ..Setup::default()
    }
}

/// The headers every answer carries: the content security policy, which
/// keeps pages out of other sites' frames, `nosniff` and the referrer
/// policy.
fn carries_the_security_policy(r: &Response) {
    let policy = r.header("content-security-policy");
    assert!(
        policy.is_some_and(|p| p.contains("frame-ancestors 'none'")),
        "{policy:?}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
}

#[test]
fn the_front_page_names_the_site_and_carries_security_headers() {
    let s = TestServer::start(
        Setup {
            before: Box::new(|site| {
                let mut c = SiteConfig::default_for("Example & Co");
                c.contact = Some("hello@example.org".into());
                SiteConfig::save(site, c).unwrap();
            }),
            ..Setup::default()
        },
        no_routes,
    );
    let r = s.get("/");
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("<h1>Example &amp; Co</h1>"), "{html}");
    assert!(
        !html.contains("hello@example.org"),
        "the address is not there in clear"
    );
    assert!(
        html.contains("<a class=\"email-reveal\" href=\"/reveal/"),
        "but a link shows it on request"
    );
    carries_the_security_policy(&r);
    // A document also keeps out of frames in browsers older than
    // frame-ancestors, and away from the window that opened it.
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cross-origin-opener-policy"), Some("same-origin"));
    assert!(
        r.header("set-cookie").is_none(),
        "anonymous pages set no cookie"
    );
    // Answers that are not documents carry the policy too.
    let health = s.get("/healthz");
    assert_eq!(health.status, 200);
    carries_the_security_policy(&health);
    // Small: the page and its stylesheet together are far under 50 KB.
    let css_url = html
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let css = s.get(css_url);
    assert_eq!(css.status, 200);
    assert!(r.body.len() + css.body.len() < 50 * 1024);
    assert!(html.contains("width=device-width"));

    let api = s.get("/api/");
    assert_eq!(api.status, 200);
    assert_eq!(api.header("content-type"), Some("application/json"));
    let data: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(data["site"]["name"], "Example & Co");
}

#[test]
fn metrics_count_requests_and_their_durations_for_prometheus() {
    let s = TestServer::start(config(|c| c.metrics_from = "127.0.0.1".into()), no_routes);
    // The metrics are the process's, and other tests in this binary run at
    // the same time: compare before and after, by at least.
    let find = |text: &str, name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let count = |text: &str, name: &str| -> u64 {
        find(text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    // Before, a counter no request has touched yet is not listed at all.
    let was = |text: &str, name: &str| find(text, name).unwrap_or(0);
    let before = s.get("/metrics");
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        before.header("content-type")
    );
    let before = before.text();
    for _ in 0..3 {
        assert_eq!(s.get("/healthz").status, 200);
    }
    assert_eq!(s.get("/no/such/page").status, 404);
    let after = s.get("/metrics").text();
    assert!(after.contains("# TYPE mantissa_http_request_seconds histogram"));
    let seconds = "mantissa_http_request_seconds_count";
    assert!(
        count(&after, seconds) >= was(&before, seconds) + 4,
        "{after}"
    );
    let inf = "mantissa_http_request_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(count(&after, inf), count(&after, seconds), "{after}");
    let ok = "mantissa_http_requests_total{status=\"2xx\"}";
    assert!(count(&after, ok) >= was(&before, ok) + 3, "{after}");
    let missing = "mantissa_http_requests_total{status=\"4xx\"}";
    assert!(count(&after, missing) >= 1, "{after}");
}

#[test]
fn unknown_urls_get_a_themed_404_in_html_and_json() {
    let s = TestServer::start(Setup::default(), no_routes);
    let r = s.get("/no/such/%3Cpage%3E");
    assert_eq!(r.status, 404);
    let html = r.text();
    assert!(
        html.contains("<h1>Not found</h1>") && html.contains("mantissa.css"),
        "{html}"
    );
    assert!(!html.contains("<page>"), "the path is escaped");
    // Under /api/, an RFC 9457 problem (issue 14, item 9).
    let r = s.get("/api/no/such/page");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (&problem["type"], &problem["title"], &problem["status"]),
        (&"about:blank".into(), &"Not Found".into(), &404.into()),
        "{problem}"
    );
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

#[test]
fn static_files_are_content_hashed_cached_and_compressed() {
    let s = TestServer::start(Setup::default(), no_routes);
    let html = s.get("/").text();
    let url = html
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = s.get(&url);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(s.get_with(&url, &[("If-None-Match", &etag)]).status, 304);
    let gz = s.get_with(&url, &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(gz.body.len() < r.body.len());
    // The compressed file's tag is weak, and still gets a 304.
    let weak = gz.header("etag").unwrap();
    assert_eq!(weak, format!("W/{etag}"));
    let again = s.get_with(
        &url,
        &[("Accept-Encoding", "gzip"), ("If-None-Match", weak)],
    );
    assert_eq!(again.status, 304);
    let old = s.get("/static/mantissa/0000000000000000/mantissa.css");
    assert_eq!(old.status, 307);
    assert_eq!(old.header("location"), Some(url.as_str()));
    assert_eq!(s.get("/static/mantissa/x/../../site.sqlite").status, 404);
}

/// Pages are compressed for a client that accepts it (and decode to the
/// same page), and sent as they are to one that does not.
#[test]
fn pages_are_compressed_only_for_clients_that_accept_it() {
    use std::io::Read;
    let s = TestServer::start(Setup::default(), no_routes);
    let plain = s.get("/");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    // Caches learn that the page differs by encoding either way.
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    let gz = s.get_with("/", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("accept-encoding"));
    assert_eq!(gz.headers_named("vary").len(), 1, "said once");
    assert!(gz.header("content-security-policy").is_some());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(gz.body.as_slice())
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
    assert!(gz.body.len() < plain.body.len());
    // Other bytes, the same page: the compressed answer's tag is the
    // plain one's, weak; either gets a 304.
    let strong = plain.header("etag").unwrap();
    assert!(strong.starts_with('"'), "{strong}");
    assert_eq!(gz.header("etag"), Some(format!("W/{strong}").as_str()));
    for tag in [strong, gz.header("etag").unwrap()] {
        let again = s.get_with("/", &[("Accept-Encoding", "gzip"), ("If-None-Match", tag)]);
        assert_eq!(again.status, 304, "{tag}");
        let again = s.get_with("/", &[("If-None-Match", tag)]);
        assert_eq!(again.status, 304, "{tag}");
    }
}

#[test]
fn anonymous_pages_answer_304_to_a_client_that_has_them() {
    let s = TestServer::start(Setup::default(), no_routes);
    let r = s.get("/");
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();
    let again = s.get_with("/", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(
        s.get_with("/", &[("If-Modified-Since", &modified)]).status,
        304
    );
    assert_eq!(
        s.get_with("/", &[("If-None-Match", "\"other\"")]).status,
        200
    );
}

#[test]
fn a_theme_overrides_templates_by_name_and_dev_mode_reloads_them() {
    let s = TestServer::start(
        Setup {
            options: WebOptions {
                dev: true,
                ..WebOptions::default()
            },
            before: Box::new(|site| {
                let dir = site.root().join("themes/plain/templates");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("front.html"), "<p>Plain {{ site.name }}</p>").unwrap();
                let mut c = SiteConfig::default_for("Themed");
                c.theme = Some("plain".into());
                SiteConfig::save(site, c).unwrap();
            }),
            ..Setup::default()
        },
        no_routes,
    );
    assert_eq!(s.get("/").text(), "<p>Plain Themed</p>");
    let file = s.site.root().join("themes/plain/templates/front.html");
    std::fs::write(&file, "<p>Changed</p>").unwrap();
    assert_eq!(s.get("/").text(), "<p>Changed</p>", "dev mode reloads");
    // A broken template: in dev the page names the file, line and cause.
    std::fs::write(&file, "<p>\n{% for x in %}\n").unwrap();
    let r = s.get("/");
    assert_eq!(r.status, 500);
    let t = r.text();
    assert!(
        t.contains("template front.html, line 2: syntax error"),
        "{t}"
    );
    // Other pages (the 404, from base.html) still work.
    assert_eq!(s.get("/missing").status, 404);
}

#[test]
fn production_loads_templates_once_and_hides_template_errors() {
    let s = TestServer::start(
        Setup {
            before: Box::new(|site| {
                let dir = site.root().join("themes/broken/templates");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("front.html"), "{% if %}").unwrap();
                let mut c = SiteConfig::default_for("Prod");
                c.theme = Some("broken".into());
                SiteConfig::save(site, c).unwrap();
            }),
            ..Setup::default()
        },
        no_routes,
    );
    let r = s.get("/");
    assert_eq!(r.status, 500);
    let t = r.text();
    assert!(
        t.contains("Something went wrong") && !t.contains("front.html"),
        "{t}"
    );
    std::fs::write(
        s.site.root().join("themes/broken/templates/front.html"),
        "fixed",
    )
    .unwrap();
    assert_eq!(s.get("/").status, 500, "production does not reload");
}

#[test]
fn state_changing_requests_need_a_csrf_token_from_this_site() {
    let s = TestServer::start(with_form_template(), test_routes);
    let page = s.get("/test/form");
    let set = set_cookie(&page, "mantissa_csrf").expect("a form page sets the CSRF cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let token = cookie_value(set);
    assert!(
        page.text()
            .contains(&format!("name=\"csrf_token\" value=\"{token}\""))
    );
    let cookie = format!("mantissa_csrf={token}");

    let ok = s.post_form(
        "/test/form",
        &[("Cookie", &cookie)],
        &format!("csrf_token={token}&x=1"),
    );
    assert_eq!((ok.status, ok.text().as_str()), (200, "posted"));
    let none = s.post_form("/test/form", &[("Cookie", &cookie)], "x=1");
    assert_eq!(none.status, 403);
    assert!(none.text().contains("CSRF token"), "{}", none.text());
    let wrong = s.post_form("/test/form", &[("Cookie", &cookie)], "csrf_token=AAAA");
    assert_eq!(wrong.status, 403);
    let no_cookie = s.post_form("/test/form", &[], &format!("csrf_token={token}"));
    assert_eq!(no_cookie.status, 403);
    let cross = s.post_form(
        "/test/form",
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
        &format!("csrf_token={token}"),
    );
    assert_eq!(cross.status, 403);
    let other_origin = s.post_form(
        "/test/form",
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
        &format!("csrf_token={token}"),
    );
    assert_eq!(other_origin.status, 403);
}

#[test]
fn sessions_live_in_the_site_store_with_safe_cookies() {
    let s = TestServer::start(with_form_template(), test_routes);
    let token = cookie_value(set_cookie(&s.get("/test/form"), "mantissa_csrf").unwrap());
    let csrf = format!("mantissa_csrf={token}");
    let login = s.post_form(
        "/test/login",
        &[("Cookie", &csrf)],
        &format!("csrf_token={token}"),
    );
    assert_eq!(login.status, 200);
    let set = set_cookie(&login, "mantissa_session").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "not over plain HTTP");
    let session = cookie_value(set);
    // Log-in renews the CSRF token (see
    // the_csrf_token_is_renewed_at_log_in_and_the_old_one_refused).
    let token = cookie_value(set_cookie(&login, "mantissa_csrf").unwrap());
    let csrf = format!("mantissa_csrf={token}");
    let both = format!("{csrf}; mantissa_session={session}");
    assert_eq!(
        s.get_with("/test/whoami", &[("Cookie", &both)]).text(),
        "alice"
    );
    assert_eq!(s.get("/test/whoami").text(), "anonymous");

    // The store keeps a hash of the token, not the token.
    let records = s
        .site
        .store()
        .read_blocking(|r| r.query::<mantissa_web::SessionRecord>().all())
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].user.as_deref(), Some("alice"));
    assert_ne!(records[0].token_hash, session);

    // Logging in again issues a new token; the old one stops working.
    let again = s.post_form(
        "/test/login",
        &[("Cookie", &both)],
        &format!("csrf_token={token}"),
    );
    let new_session = cookie_value(set_cookie(&again, "mantissa_session").unwrap());
    assert_ne!(new_session, session);
    let token = cookie_value(set_cookie(&again, "mantissa_csrf").unwrap());
    let csrf = format!("mantissa_csrf={token}");
    assert_eq!(
        s.get_with("/test/whoami", &[("Cookie", &both)]).text(),
        "anonymous"
    );
    let new_both = format!("{csrf}; mantissa_session={new_session}");
    let out = s.post_form(
        "/test/logout",
        &[("Cookie", &new_both)],
        &format!("csrf_token={token}"),
    );
    assert!(
        set_cookie(&out, "mantissa_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        s.get_with("/test/whoami", &[("Cookie", &new_both)]).text(),
        "anonymous"
    );
}

#[test]
fn malformed_requests_get_400_and_the_server_keeps_serving() {
    let s = TestServer::start(Setup::default(), no_routes);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ] {
        let r = send_raw(s.addr, raw);
        assert!(
            r.status == 400 || r.status == 505,
            "{:?} -> {}",
            String::from_utf8_lossy(raw),
            r.status
        );
    }
    let huge = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let r = send_raw(s.addr, huge.as_bytes());
    assert!(
        r.status == 414 || r.status == 431 || r.status == 400,
        "{}",
        r.status
    );
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn bodies_over_the_limit_are_refused() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                max_body_bytes: 1000,
                ..Limits::default()
            },
            ..with_form_template()
        },
        test_routes,
    );
    let r = s.post_form("/test/form", &[], &"x".repeat(5000));
    assert_eq!(r.status, 413);
    assert!(r.text().contains("larger than 1000 bytes"), "{}", r.text());
}

#[test]
fn each_address_is_rate_limited_with_retry_after() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                requests_per_second_per_ip: 1,
                request_burst_per_ip: 5,
                ..Limits::default()
            },
            ..Setup::default()
        },
        no_routes,
    );
    let statuses: Vec<u16> = (0..8).map(|_| s.get("/healthz").status).collect();
    assert_eq!(&statuses[..5], &[200; 5]);
    let r = s.get("/healthz");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // A refusal is an answer like any other.
    carries_the_security_policy(&r);
}

/// Issue 14, item 9: under /api/, a refusal from before any route (the
/// guard's rate limit) and a handler's panic are RFC 9457 problems too,
/// with their headers kept.
#[test]
fn refusals_and_panics_under_api_are_problems() {
    fn boom() -> Router<App> {
        Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("a handler's bug");
                }
            }),
        )
    }
    let s = TestServer::start(
        Setup {
            limits: Limits {
                requests_per_second_per_ip: 1,
                request_burst_per_ip: 3,
                ..Limits::default()
            },
            ..Setup::default()
        },
        boom,
    );
    let r = s.get("/api/boom");
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(problem["status"], 500);
    assert!(
        !r.text().contains("a handler's bug"),
        "internals are logged, never sent"
    );
    let refused = (0..5)
        .map(|_| s.get("/api/"))
        .find(|r| r.status == 429)
        .expect("a 429 within five requests");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert!(refused.header("retry-after").is_some());
    let problem: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(problem["status"], 429);
    assert!(problem["detail"].as_str().unwrap().contains("slow down"));
}

#[test]
fn crawlers_are_paced_and_told_so_in_robots_txt() {
    let s = TestServer::start(Setup::default(), no_routes);
    let robots = s.get("/robots.txt");
    assert!(robots.text().contains("Crawl-delay: 1"));
    let bot = [("User-Agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")];
    let statuses: Vec<u16> = (0..7).map(|_| s.get_with("/", &bot).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(s.get("/").status, 200, "people are not affected");
}

#[test]
fn under_load_new_requests_are_shed_with_503() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                max_in_flight: 1,
                ..Limits::default()
            },
            ..Setup::default()
        },
        test_routes,
    );
    let addr = s.addr;
    let slow = std::thread::spawn(move || {
        send_raw(
            addr,
            b"GET /test/slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = s.get("/healthz");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(slow.join().unwrap().text(), "done");
}

#[test]
fn shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
    let mut s = TestServer::start(Setup::default(), test_routes);
    let addr = s.addr;
    let slow = std::thread::spawn(move || {
        send_raw(
            addr,
            b"GET /test/slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    s.stop();
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

/// A large public answer is sent whole, without an ETag: tagging it would
/// mean holding all of it to hash it (before, over 16 MiB answered 500).
#[test]
fn a_large_answer_is_sent_whole_without_a_tag() {
    let s = TestServer::start(Setup::default(), test_routes);
    let r = s.get("/test/big");
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 17_000_000, "{} bytes", r.body.len());
    assert!(r.body.ends_with(b"\"]"));
    assert_eq!(r.header("etag"), None);
    // A small one still has its tag.
    assert!(s.get("/").header("etag").is_some());
}

/// A site whose front page gives a contact address.
fn site_with_contact() -> Setup {
    Setup {
        before: Box::new(|site| {
            let mut c = SiteConfig::default_for("Example");
            c.contact = Some("hello@example.org".into());
            SiteConfig::save(site, c).unwrap();
        }),
        ..Setup::default()
    }
}

/// What a harvester finds in a page: every e-mail address in it once its
/// character references are decoded, as a harvester's HTML parser does
/// (and in JSON, where `\u0040` is an `@`).
fn harvest(body: &str) -> Vec<String> {
    let text = shown(body).replace("\\u0040", "@");
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (at, _) in text.match_indices('@') {
        let start = bytes[..at]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || b"._+-".contains(b)))
            .map_or(0, |i| i + 1);
        let end = bytes[at + 1..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || b".-".contains(b)))
            .map_or(bytes.len(), |i| at + 1 + i);
        let host = text[at + 1..end].trim_end_matches('.');
        if start < at && host.contains('.') {
            found.push(format!("{}@{host}", &text[start..at]));
        }
    }
    found
}

/// A harvester that reads the front page and its JSON twin, decoding them
/// as a real one would, finds no address; a person follows the link,
/// presses the button, and reads it — and one address may see only so many
/// addresses an hour.
#[test]
fn harvesters_find_no_address_and_people_see_it_on_request() {
    let s = TestServer::start(site_with_contact(), no_routes);
    let page = s.get("/").text();
    assert_eq!(harvest(&page), Vec::<String>::new(), "{page}");
    let api = s.get("/api/");
    assert_eq!(api.status, 200);
    assert_eq!(harvest(&api.text()), Vec::<String>::new(), "{}", api.text());
    assert!(
        api.text().contains("[e-mail address: /reveal/"),
        "{}",
        api.text()
    );

    // A person clicks "e-mail address (show)", then the button.
    let link = page
        .split("class=\"email-reveal\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let mut person = Visitor::at("127.0.20.1");
    let asked = person.get(&s, &link);
    assert_eq!(asked.status, 200);
    assert_eq!(asked.header("x-robots-tag"), Some("noindex, nofollow"));
    assert_eq!(harvest(&asked.text()), Vec::<String>::new());
    let shown = person.submit(&s, &link, &link, &[]);
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert!(
        shown
            .text()
            .contains("<a href=\"mailto:hello@example.org\">hello@example.org</a>"),
        "{}",
        shown.text()
    );
    assert_eq!(shown.header("cache-control"), Some("private, no-store"));

    // Its button costs a form each time, and an address gets only so many.
    let body = person.form_body(&s, &link, &[]);
    for _ in 1..mantissa_web::REVEALS_PER_HOUR {
        assert_eq!(person.post(&s, &link, &body).status, 200);
    }
    let refused = person.post(&s, &link, &body);
    assert_eq!(refused.status, 429);
    assert!(
        refused.text().contains("Too many e-mail addresses"),
        "{}",
        refused.text()
    );
    assert!(!refused.text().contains("hello@example.org"));
    // Another address is not held back.
    let mut other = Visitor::at("127.0.20.2");
    assert_eq!(other.submit(&s, &link, &link, &[]).status, 200);

    // A made-up or altered token is not found, and shows nothing.
    assert_eq!(s.get("/reveal/not-a-token").status, 404);
    let altered = format!("{}A", &link);
    assert_eq!(s.get(&altered).status, 404);
}

/// A signed-in visitor sees the address (written as character references,
/// as before), and forms keep what a visitor typed.
#[test]
fn signed_in_people_see_addresses() {
    let s = TestServer::start(
        Setup {
            options: with_form_template().options,
            ..site_with_contact()
        },
        test_routes,
    );
    let mut v = Visitor::default();
    assert_eq!(v.submit(&s, "/test/form", "/test/login", &[]).status, 200);
    let page = v.get(&s, "/").text();
    assert!(
        shown(&page).contains("Write to hello@example.org."),
        "{page}"
    );
    assert!(!page.contains("email-reveal"));
}

/// Issue 13, item 20: behind a reverse proxy on the same host every client
/// is 127.0.0.1, so `/metrics`, open to loopback, was open to everyone.
/// Now it is closed unless the `metrics-from` setting lists the client.
#[test]
fn metrics_are_closed_unless_the_site_says_who_may_read_them() {
    let s = TestServer::start(Setup::default(), no_routes);
    let r = s.get("/metrics");
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("mantissa_http_requests_total"));
    // Saying X-Forwarded-For does not help a client that is not a trusted
    // proxy: anyone can write it.
    let s = TestServer::start(config(|c| c.metrics_from = "10.9.9.9".into()), no_routes);
    assert_eq!(
        s.get_with("/metrics", &[("X-Forwarded-For", "10.9.9.9")])
            .status,
        404
    );
}

/// Issue 13, item 20: with a trusted proxy, the client its headers name is
/// the one the site sees: `/metrics` opens only to the listed client, a
/// client cannot pass for another by writing the left of the header, and
/// visitors no longer share the proxy's one rate bucket.
#[test]
fn forwarding_headers_name_the_client_only_from_trusted_proxies() {
    let mut setup = config(|c| {
        c.trusted_proxies = "127.0.0.1".into();
        c.metrics_from = "10.9.9.9".into();
    });
    setup.limits = Limits {
        requests_per_second_per_ip: 1,
        request_burst_per_ip: 5,
        ..Limits::default()
    };
    let s = TestServer::start(setup, no_routes);
    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    assert_eq!(s.get_with("/metrics", &xff("10.9.9.9")).status, 200);
    assert_eq!(
        s.get_with("/metrics", &[("Forwarded", "for=10.9.9.9;proto=https")])
            .status,
        200
    );
    assert_eq!(s.get_with("/metrics", &xff("10.1.1.1")).status, 404);
    // The proxy appends the real client on the right: what the client
    // wrote on the left does not count.
    assert_eq!(
        s.get_with("/metrics", &xff("10.9.9.9, 10.1.1.1")).status,
        404
    );
    assert_eq!(s.get_with("/metrics", &[]).status, 404, "the proxy itself");

    // One client using up its allowance leaves the others theirs.
    let statuses: Vec<u16> = (0..7)
        .map(|_| s.get_with("/healthz", &xff("10.2.2.2")).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(s.get_with("/healthz", &xff("10.3.3.3")).status, 200);
}

/// Issue 13, item 24: robots.txt disallowed `/admin/` but not `/admin`.
#[test]
fn robots_txt_keeps_crawlers_out_of_the_admin_console_itself() {
    let s = TestServer::start(Setup::default(), no_routes);
    let robots = s.get("/robots.txt").text();
    assert!(
        robots.lines().any(|l| l.trim() == "Disallow: /admin"),
        "{robots}"
    );
}

/// Issue 13, item 17: a signed-in visitor's pages were sent `no-cache`
/// with an ETag, so after log-out Back showed them from the browser's
/// cache. Now they are `private, no-store`, with no ETag and no 304; an
/// anonymous visitor's pages keep conditional GET.
#[test]
fn a_signed_in_visitors_pages_are_never_stored() {
    let s = TestServer::start(with_form_template(), test_routes);
    let anonymous = s.get("/");
    assert!(anonymous.header("etag").is_some());
    let mut v = Visitor::default();
    v.get(&s, "/test/form");
    let token = v.cookie("mantissa_csrf").unwrap().to_string();
    let r = s.post_form(
        "/test/login",
        &[("Cookie", &v.header())],
        &format!("csrf_token={token}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    v.keep(&r);
    for path in ["/test/whoami", "/"] {
        let r = v.get(&s, path);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("cache-control"),
            Some("private, no-store"),
            "{path}"
        );
        assert!(r.header("etag").is_none(), "{path}");
        let again = s.get_with(path, &[("Cookie", &v.header()), ("If-None-Match", "*")]);
        assert_eq!(again.status, 200, "{path}");
    }
    // HSTS only over TLS (see tls.rs).
    assert!(anonymous.header("strict-transport-security").is_none());
}

/// Logs in through `action` with the CSRF token of the form page: the
/// visitor and the answer.
fn log_in(s: &TestServer, action: &str) -> (Visitor, Response) {
    let mut v = Visitor::default();
    v.get(s, "/test/form");
    let token = v.cookie("mantissa_csrf").unwrap().to_string();
    let r = s.post_form(
        action,
        &[("Cookie", &v.header())],
        &format!("csrf_token={token}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    v.keep(&r);
    (v, r)
}

/// Issue 13, item 18: the session cookie always carried `Max-Age` (12
/// hours) even without "remember me". Now it is a browser-session cookie
/// then (no `Max-Age`, no `Expires`), and only "remember me" keeps it.
#[test]
fn a_session_cookie_outlives_the_browser_only_when_remembered() {
    let s = TestServer::start(with_form_template(), test_routes);
    let (_, r) = log_in(&s, "/test/login");
    let set = set_cookie(&r, "mantissa_session").unwrap();
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "{set}"
    );
    let (_, r) = log_in(&s, "/test/login-remembered");
    let set = set_cookie(&r, "mantissa_session").unwrap();
    assert!(set.contains("; Max-Age=3600"), "{set}");
}

/// Issue 13, item 18: the CSRF token was kept across log-in, so a token
/// learnt before (a shared computer, a planted cookie) stayed good for the
/// signed-in session. Now log-in gives a new one and the old one is
/// refused.
#[test]
fn the_csrf_token_is_renewed_at_log_in_and_the_old_one_refused() {
    let s = TestServer::start(with_form_template(), test_routes);
    let mut v = Visitor::default();
    v.get(&s, "/test/form");
    let before = v.cookie("mantissa_csrf").unwrap().to_string();
    let r = s.post_form(
        "/test/login",
        &[("Cookie", &v.header())],
        &format!("csrf_token={before}"),
    );
    assert_eq!(r.status, 200);
    v.keep(&r);
    let after = v.cookie("mantissa_csrf").unwrap().to_string();
    assert_ne!(after, before);
    // What an attacker who learnt the old token can do: post it with the
    // browser's cookies, which now carry the new token.
    let r = s.post_form(
        "/test/form",
        &[("Cookie", &v.header())],
        &format!("csrf_token={before}"),
    );
    assert_eq!(r.status, 403);
    let r = s.post_form(
        "/test/form",
        &[("Cookie", &v.header())],
        &format!("csrf_token={after}"),
    );
    assert_eq!(r.status, 200);
}

/// Issue 13, item 24: e-mail obfuscation ran on text already escaped, so
/// an address next to `&<>"` showed double-escaped (`&lt;help@…&gt;`).
/// What a visitor reads is now the text as written, while the page's HTML
/// still carries no address in plain characters.
#[test]
fn an_address_among_markup_characters_shows_as_written() {
    let tagline = r#"Write to <help@example.org> & say "hi""#;
    let s = TestServer::start(config(move |c| c.tagline = tagline.into()), no_routes);
    let html = s.get("/").text();
    // On the public front page the address itself is behind its reveal
    // link (see `harvesters_find_no_address_and_people_see_it_on_request`);
    // the characters around it show as written. Where addresses are shown,
    // they are too (`obfuscate_emails`' examples).
    assert!(
        html.contains("Write to &lt;<a class=\"email-reveal\""),
        "{html}"
    );
    assert!(
        html.contains("e-mail address (show)</a>&gt; &amp; say &quot;hi&quot;"),
        "{html}"
    );
    assert!(!shown(&html).contains("help@example.org"), "{html}");
    assert!(!html.contains("<help"), "{html}");
}

/// Issue 13, items 17, 18 and 20 behind a reverse proxy that ends TLS: when
/// a trusted proxy says the client came over HTTPS, cookies are `Secure`
/// with the `__Host-` prefix and answers carry HSTS; the same header from
/// anyone else changes nothing.
#[test]
fn a_trusted_proxy_that_ends_tls_gets_https_cookies_and_hsts() {
    let mut setup = with_form_template();
    let before = std::mem::replace(&mut setup.before, Box::new(|_| {}));
    setup.before = Box::new(move |site| {
        before(site);
        let mut c = SiteConfig::load_or_init(site).unwrap();
        c.trusted_proxies = "127.0.0.1".into();
        SiteConfig::save(site, c).unwrap();
    });
    let s = TestServer::start(setup, test_routes);
    for header in [
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=10.1.1.1;proto=https"),
    ] {
        let r = s.get_with("/test/form", &[header]);
        let csrf = set_cookie(&r, "__Host-mantissa_csrf").unwrap_or_else(|| panic!("{header:?}"));
        assert!(csrf.contains("; Secure"), "{csrf}");
        assert!(
            r.header("strict-transport-security").is_some(),
            "{header:?}"
        );
    }
    let plain = s.get_with("/test/form", &[("X-Forwarded-Proto", "http")]);
    assert!(set_cookie(&plain, "mantissa_csrf").is_some());
    assert!(plain.header("strict-transport-security").is_none());

    let untrusted = TestServer::start(with_form_template(), test_routes);
    let r = untrusted.get_with("/test/form", &[("X-Forwarded-Proto", "https")]);
    assert!(set_cookie(&r, "mantissa_csrf").is_some());
    assert!(set_cookie(&r, "__Host-mantissa_csrf").is_none());
    assert!(r.header("strict-transport-security").is_none());
}

/// A trusted reverse proxy carries many clients' connections: the cap on
/// connections per address does not hold it back, while it still holds
/// any other address.
#[test]
fn a_trusted_proxy_may_hold_more_connections_than_an_address() {
    let s = TestServer::start(
        Setup {
            limits: Limits {
                max_connections_per_ip: 4,
                ..Limits::default()
            },
            ..config(|c| c.trusted_proxies = "127.0.0.1".into())
        },
        no_routes,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = s.addr;
    // Eight connections from `ip`, each asking once and kept open: how
    // many were answered 200.
    let served_from = |ip: &'static str| {
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut held = Vec::new();
            let mut served = 0;
            for _ in 0..8 {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
                let mut c = socket.connect(addr).await.unwrap();
                let _ = c
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await;
                let mut buf = [0u8; 512];
                let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                if buf[..n].starts_with(b"HTTP/1.1 200") {
                    served += 1;
                }
                held.push(c);
            }
            served
        })
    };
    assert_eq!(
        served_from("127.0.0.1"),
        8,
        "the proxy's connections are all served"
    );
    assert_eq!(served_from("127.0.0.2"), 4, "another address gets its four");
}

/// A form that axum cannot read (a field missing, the wrong type) is
/// answered with the site's error page, its status kept and its message in
/// words for people, not axum's line of text; on `/api/` with JSON.
#[test]
fn a_form_axum_cannot_read_gets_a_page_that_says_why() {
    let s = TestServer::start(with_form_template(), test_routes);
    let mut v = Visitor::default();
    let r = v.submit(&s, "/test/form", "/test/titled", &[("body", "no title")]);
    assert_eq!(r.status, 422);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let text = shown(&r.text());
    assert!(
        text.contains("The form was sent without its “title” field."),
        "{text}"
    );
    assert!(!text.contains("Failed to deserialize"), "{text}");
    assert!(text.contains("<h1>"), "a whole page: {text}");
    // Sent as something else than a form.
    let body = v.form_body(&s, "/test/form", &[("title", "x")]);
    let token = body
        .split('&')
        .next()
        .unwrap()
        .trim_start_matches("csrf_token=")
        .to_string();
    let r = s.send(&format!(
        "POST /test/titled HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {}\r\n\
         X-CSRF-Token: {token}\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\ntitle=x",
        s.addr,
        v.header()
    ));
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(
        shown(&r.text()).contains("takes a form sent from a web page"),
        "{}",
        r.text()
    );
    // The same through /api/: a problem (RFC 9457) that says it.
    let body = v.form_body(&s, "/test/form", &[]);
    let r = v.post(&s, "/api/test/titled", &body);
    assert_eq!(r.status, 422);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["status"], 422);
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .contains("without its “title” field"),
        "{json}"
    );
    // A form that is whole still works.
    let r = v.submit(&s, "/test/form", "/test/titled", &[("title", "Hello")]);
    assert_eq!((r.status, r.text()), (200, "Hello".to_string()));
}
