//! The request pipeline: every step a request meets between hyper and its
//! route, in order, as one tower service.
//!
//! ```text
//! client address (trusted proxies) ─ access log ─ panic catcher ─ /api prefix
//!   ─ guard (rate) ─ crawler pacing ─ body (whole, by a deadline) ─ guard (load)
//!   ─ session ─ CSRF ─ owner of /private/… ─ route ─ page rendering
//!   ─ cookies, `no-store` for signed-in visitors ─ conditional GET
//!   ─ security headers (HSTS over TLS)
//! ```
//!
//! Why one service and not a stack of `axum::middleware::from_fn` layers,
//! one per step: `from_fn` clones the whole service below it on every
//! request (its `Next` must own it), and `Router::layer` wraps every route
//! in the whole stack, so a dozen small layers cost several microseconds a
//! request in reference counting and allocation, more than their work
//! (measured with `bench/web.sh --analysis` and `bench/web/examples/parts.rs`;
//! `bench/README.md`, "Web"). Here the steps are plain functions of
//! [`protect`](crate::protect), [`session`](crate::session),
//! [`page`](crate::page) and [`offering`](crate::offering), and the order
//! they run in is written once, below. Only body-shaping stays in tower-http
//! (compression), axum's router is left to do routing alone, and
//! [`HttpProtocol`](crate::HttpProtocol) calls the service directly, with no
//! router around it.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::{Service, ServiceExt};
use tower_http::compression::{Compression, CompressionBody};

use crate::app::App;
use crate::http::ClientInfo;
use crate::observe::AccessEntry;
use crate::offering::require_owner;
use crate::page::{
    Chrome, WebError, explain_plain_refusal, is_pending, render_error_with_status, render_pending,
    strip_api_prefix,
};
use crate::protect::{
    Conditional, add_security_headers, client_ip, pace_crawler, refusal_response,
};
use crate::session::{
    Session, check_csrf, csrf_after, is_tls, load_session, write_csrf_cookie, write_session_cookie,
};

/// Mantissa's web application as a tower service: its routes behind the
/// request pipeline, answers compressed when the client accepts it. Made by
/// [`App::router_with`]; served by [`HttpProtocol`](crate::HttpProtocol).
///
/// Compression is only put around requests that say `Accept-Encoding`:
/// tower-http's wrapper costs about half a microsecond a request even when
/// it has nothing to do (`bench/web/examples/parts.rs`), which clients that
/// accept no encoding (scripts, many crawlers, load generators) need not
/// pay. The one it wraps pays a box for the compressed body instead.
#[derive(Clone)]
pub struct WebService {
    plain: Pipeline,
    compressed: Compression<Pipeline>,
}

impl WebService {
    pub(crate) fn new(app: App, routes: Router) -> WebService {
        let plain = Pipeline(Arc::new((app, routes)));
        WebService {
            compressed: Compression::new(plain.clone()),
            plain,
        }
    }
}

impl Service<Request> for WebService {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready (see `Pipeline::poll_ready`; tower-http's
        // compression asks its inner service only).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !req.headers().contains_key(header::ACCEPT_ENCODING) {
            return self.plain.call(req);
        }
        let response = self.compressed.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            if response.headers().contains_key(header::CONTENT_ENCODING) {
                weaken_etag(response.headers_mut());
            }
            Ok(response.map(|body: CompressionBody<Body>| Body::new(body)))
        })
    }
}

/// A compressed answer is not byte for byte the page its ETag was made
/// of, so the tag becomes weak (`W/"…"`, "the same page"), as nginx does:
/// a strong tag promises the very bytes. Conditional GET compares tags
/// weakly, so a client holding either form still gets its 304.
fn weaken_etag(h: &mut axum::http::HeaderMap) {
    let Some(tag) = h.get(header::ETAG) else {
        return;
    };
    if tag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(tag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(tag.as_bytes());
        if let Ok(weak) = axum::http::HeaderValue::from_bytes(&weak) {
            h.insert(header::ETAG, weak);
        }
    }
}

/// The future of an answer, boxed: what both services return.
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The steps around the routes (see the module documentation). One `Arc`,
/// so a request costs one reference count, not one per part.
#[derive(Clone)]
pub struct Pipeline(Arc<(App, Router)>);

impl Service<Request> for Pipeline {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(handle(self.0.clone(), req))
    }
}

/// The access log around everything, so that refusals and panics are logged
/// too. Never an error: the service's answer as it is, with no wrapper
/// future to move it through.
async fn handle(parts: Arc<(App, Router)>, mut req: Request) -> Result<Response, Infallible> {
    let (app, routes) = &*parts;
    forwarded_client(app, &mut req);
    let entry = AccessEntry::begin(app, &req);
    let api = req.uri().path() == "/api" || req.uri().path().starts_with("/api/");
    let response = match AssertUnwindSafe(protect(app, routes.clone(), req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) if api => crate::api::as_problem(panicked(panic, app.is_dev())).await,
        Err(panic) => panicked(panic, app.is_dev()),
    };
    entry.end(&response);
    if response.status().is_server_error() {
        app.request_rate().count_error();
    }
    Ok(response)
}

/// A handler panicked: logged, answered with a plain 500 (the page renderer
/// may be what panicked), which says what the panic said in development.
fn panicked(panic: Box<dyn std::any::Any + Send>, dev: bool) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(panic = %message, "a request's handler panicked");
    let text = if dev {
        format!("Something went wrong: a handler panicked.\n\n{message}\n")
    } else {
        "Something went wrong. The error has been logged.\n".to_string()
    };
    let mut r = (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response();
    add_security_headers(r.headers_mut());
    r
}

/// The steps that may refuse a request before any application code runs,
/// and the headers every response carries.
async fn protect(app: &App, routes: Router, mut req: Request) -> Response {
    let tls = is_tls(&req);
    let api = strip_api_prefix(&mut req);
    let mut response = guarded(app, routes, req, api).await;
    if api {
        // Whatever refused the request (the guard, axum, a panic), the
        // answer under `/api/` is a problem, not text or a page.
        response = crate::api::redirect_to_json(crate::api::as_problem(response).await);
    }
    add_security_headers(response.headers_mut());
    if tls && let Some(hsts) = app.hsts() {
        response
            .headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(hsts);
    }
    vary_on_accept_encoding(response.headers_mut());
    response
}

/// The guard's steps, in order: the address's rate, crawler pacing, the
/// body (received whole, holding only a slot of its address's), then a
/// permit to be handled (the address's and the site's), held until the
/// answer is ready. A request with no address (called directly, not over
/// a connection) is not guarded.
async fn guarded(app: &App, routes: Router, mut req: Request, api: bool) -> Response {
    let guard = app.guard();
    let ip = client_ip(&req);
    if let Some(Err(refusal)) = ip.map(|ip| guard.check_rate(ip)) {
        return refusal_response(refusal);
    }
    if let Some(refused) = pace_crawler(app, &req) {
        return refused;
    }
    if !req.body().is_end_stream() {
        let _receiving = match ip.map(|ip| guard.receive_body(ip)) {
            Some(Err(refusal)) => return refusal_response(refusal),
            receiving => receiving,
        };
        if let Err(refused) = receive_body(app, &mut req).await {
            return refused;
        }
    }
    let _permit = match ip.map(|ip| guard.begin_request(ip)) {
        Some(Err(refusal)) => return refusal_response(refusal),
        permit => permit,
    };
    let conditional = Conditional::of(&req);
    let response = page(app, routes, req, api).await;
    match conditional {
        Some(c) => c.apply(app, response).await,
        None => response,
    }
}

/// Reads a request's whole body before anything handles it, by a deadline
/// counted from the end of its head (the body timeout), and no larger than
/// the body limit.
///
/// A deadline, and not a pause allowed between bytes: a client that
/// trickles a byte every few seconds would otherwise hold its request open
/// for as long as it likes. And whole, before the request takes a permit
/// of the site's: the bodies still arriving are counted per address
/// instead ([`Guard::receive_body`](mantissa_server::Guard::receive_body)),
/// so that slow bodies from many addresses cannot use up the permits
/// visitors need. Every body is at most the body limit (2 MiB by default)
/// and was read whole by its handler before, so nothing that streamed is
/// lost.
async fn receive_body(app: &App, req: &mut Request) -> Result<(), Response> {
    let limits = app.limits();
    let limit = limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {limit} bytes"),
    );
    let failed = if declared.is_some_and(|n| n > limit as u64) {
        too_large
    } else {
        let body = std::mem::replace(req.body_mut(), Body::empty());
        match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => {
                *req.body_mut() = Body::from(bytes);
                return Ok(());
            }
            Err(_) => {
                metrics::counter!("mantissa_requests_refused_total", "reason" => "slow_body")
                    .increment(1);
                (
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} seconds",
                        limits.body_timeout.as_secs()
                    ),
                )
            }
            Ok(Err(e)) if is_length_limit(&e) => too_large,
            Ok(Err(_)) => (
                StatusCode::BAD_REQUEST,
                "the request body was cut off".to_string(),
            ),
        }
    };
    let (status, message) = failed;
    let mut r = render_error_with_status(app, req, status, WebError::BadRequest(message));
    // The rest of the body is not read: the connection cannot be reused
    // (HTTP/2 resets the stream by itself, and has no such header).
    if req.version() < axum::http::Version::HTTP_2 {
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    Err(r)
}

/// Whether reading a body failed because it is larger than the limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Every answer may differ by `Accept-Encoding` (see [`WebService`]), and
/// says so to caches, also when this request accepted no encoding and
/// compression was not put around it.
fn vary_on_accept_encoding(h: &mut axum::http::HeaderMap) {
    let said = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|f| f.trim().eq_ignore_ascii_case("accept-encoding") || f.trim() == "*")
        })
    });
    if !said {
        h.append(
            header::VARY,
            axum::http::HeaderValue::from_static("accept-encoding"),
        );
    }
}

/// Whether `path` (without its `/api` prefix) is one only a signed-in user
/// reaches: `/private/…` and the admin console.
fn behind_log_in(path: &str) -> bool {
    let under = |root: &str| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under("/private") || under("/admin")
}

/// When the peer is one of the site's trusted reverse proxies, the client
/// is the one its `X-Forwarded-For` (or `Forwarded: for=`) names: the
/// address every later step sees (rate limits, log-in throttling, the
/// access log, `/metrics`). The header is read from the right: the last
/// address that is not itself a trusted proxy is the client, since a client
/// can put anything it likes on the left. From any other peer the headers
/// are ignored.
fn forwarded_client(app: &App, req: &mut Request) {
    let Some(info) = req.extensions().get::<ClientInfo>().copied() else {
        return;
    };
    let proxies = app.trusted_proxies();
    if proxies.is_empty() || !proxies.contains(info.peer.ip()) {
        return;
    }
    // A proxy that ends TLS says so: the answer then goes out over HTTPS,
    // and its cookies are marked and named for it (`Secure`, `__Host-`)
    // and it carries HSTS, as Django's SECURE_PROXY_SSL_HEADER does. The
    // last value is the one our proxy wrote.
    if forwarded_proto(req.headers()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
        && let Some(info) = req.extensions_mut().get_mut::<ClientInfo>()
    {
        info.tls = true;
    }
    let mut hops: Vec<std::net::IpAddr> = Vec::new();
    let headers = req.headers();
    if headers.contains_key(header::FORWARDED) {
        for v in headers.get_all(header::FORWARDED) {
            let Ok(v) = v.to_str() else { return };
            for element in v.split(',') {
                for pair in element.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=')
                        && k.trim().eq_ignore_ascii_case("for")
                    {
                        match parse_forwarded_for(val.trim()) {
                            Some(ip) => hops.push(ip),
                            // `unknown` or an obfuscated name: not an
                            // address to limit by; stop at the proxy.
                            None => return,
                        }
                    }
                }
            }
        }
    } else {
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { return };
            for hop in v.split(',') {
                match hop.trim().parse() {
                    Ok(ip) => hops.push(ip),
                    Err(_) => return,
                }
            }
        }
    }
    let client = hops
        .iter()
        .rev()
        .find(|ip| !proxies.contains(**ip))
        .or(hops.first());
    if let Some(ip) = client
        && let Some(info) = req.extensions_mut().get_mut::<ClientInfo>()
    {
        info.peer = std::net::SocketAddr::new(*ip, 0);
    }
}

/// The protocol the last proxy was reached by: the last `proto=` of
/// `Forwarded`, or else the last value of `X-Forwarded-Proto`.
fn forwarded_proto(headers: &axum::http::HeaderMap) -> Option<String> {
    let last_value = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .map(|v| v.trim().to_string())
    };
    if headers.contains_key(header::FORWARDED) {
        let element = last_value("forwarded")?;
        return element.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("proto")
                .then(|| v.trim().trim_matches('"').to_string())
        });
    }
    last_value("x-forwarded-proto")
}

/// The address of a `Forwarded` header's `for=` value: `192.0.2.1`,
/// `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`.
fn parse_forwarded_for(v: &str) -> Option<std::net::IpAddr> {
    let v = v.trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

/// Session and CSRF in, the route, the page rendered, cookies out.
async fn page(app: &App, routes: Router, mut req: Request, api: bool) -> Response {
    let tls = is_tls(&req);
    let path = req.uri().path().to_string();
    let done_key = (req.method() == axum::http::Method::GET)
        .then(|| crate::nav::done_key(req.uri().query()))
        .flatten();
    let session = match load_session(app, &mut req).await {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    if api && behind_log_in(&path) && session.user().is_none() {
        // Nobody is signed in, so there is nothing a forged request could
        // ride on: 401, saying how to sign in, before the CSRF check would
        // refuse a write with a 403 that says "reload the form".
        return crate::api::unauthorized();
    }
    let csrf = match check_csrf(app, &mut req).await {
        Ok(token) => token,
        Err(refused) => return refused,
    };
    if app.is_dev()
        && let Err(e) = app.reload_config().await
    {
        tracing::warn!(error = %e, "reloading the site configuration failed");
    }
    let response = match require_owner(app, &mut req).await {
        Err(refused) => refused,
        Ok(()) => match routes.oneshot(req).await {
            Ok(response) => explain_plain_refusal(response).await,
            Err(never) => match never {},
        },
    };
    let csrf = csrf_after(&session, csrf);
    let user = Session::user(&session);
    let personal = user.is_some() || behind_log_in(&path);
    let chrome = if !api && is_pending(&response) {
        Chrome {
            menu: app.menu(user.clone()).await,
            done: done_key.and_then(|k| crate::nav::message(app, &k)),
            user,
        }
    } else {
        Chrome {
            user,
            ..Chrome::default()
        }
    };
    let mut response = render_pending(app, response, api, &path, Some(csrf.clone()), chrome);
    if personal {
        // What a signed-in visitor is shown is theirs: no cache may keep
        // it, the browser's included, so that Back after log-out (or the
        // next person at a shared computer) does not show it again. No
        // ETag either (conditional GET leaves `no-store` answers alone).
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("private, no-store"),
        );
    }
    write_csrf_cookie(&csrf, tls, api, &mut response);
    write_session_cookie(&session, tls, &mut response);
    response
}
