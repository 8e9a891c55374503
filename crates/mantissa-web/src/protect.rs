//! The protective steps of the request pipeline ([`crate::pipeline`]): the
//! guard's rate limits and load shedding, crawler pacing, security headers
//! and conditional GET (the access log is [`crate::observe`]'s). Each is a
//! plain function the pipeline calls in order, not a middleware layer of
//! its own.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use mantissa_server::Refusal;

use crate::app::App;
use crate::http::ClientInfo;
use crate::page::WebError;

pub(crate) fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions().get::<ClientInfo>().map(|c| c.peer.ip())
}

pub(crate) fn refusal_response(refusal: Refusal) -> Response {
    let (status, text) = match refusal {
        Refusal::RateLimited(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests from your address; please slow down.\n",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy; please try again shortly.\n",
        ),
    };
    (
        status,
        [
            (header::RETRY_AFTER, refusal.retry_after_secs().to_string()),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".into()),
        ],
        text,
    )
        .into_response()
}

type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// A rate limit per client address that forgets the addresses it no longer
/// needs, once a minute: without that, requests from ever new addresses (a
/// crawler storm, a harvester on many addresses) would grow it without
/// bound. Crawler pacing and address reveals use it.
pub struct AddressLimiter {
    limiter: KeyedLimiter,
    started: Instant,
    /// When addresses with a full allowance were last forgotten, in seconds
    /// since `started`.
    pruned: std::sync::atomic::AtomicU64,
}

/// How often an address limiter forgets the addresses it no longer needs.
const PRUNE_SECS: u64 = 60;

impl AddressLimiter {
    /// A limiter allowing each address `quota`.
    pub fn new(quota: Quota) -> AddressLimiter {
        AddressLimiter {
            limiter: RateLimiter::keyed(quota),
            started: Instant::now(),
            pruned: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts one request from `ip`: when it is one too many, how long until
    /// it would be allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.started.elapsed().as_secs();
        let last = self.pruned.load(Relaxed);
        if now >= last + PRUNE_SECS
            && self
                .pruned
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Paces crawlers to the site's `Crawl-delay`: one request per `delay`
/// seconds per address, after a burst of five.
pub(crate) fn bot_limiter(delay_secs: u64) -> AddressLimiter {
    AddressLimiter::new(
        Quota::with_period(Duration::from_secs(delay_secs.max(1)))
            .expect("nonzero period")
            .allow_burst(NonZeroU32::new(5).expect("nonzero")),
    )
}

/// Whether a User-Agent names a crawler.
pub fn is_bot(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    [
        "bot",
        "crawl",
        "spider",
        "slurp",
        "facebookexternalhit",
        "bingpreview",
    ]
    .iter()
    .any(|w| ua.contains(w))
}

/// Rate-limits identified crawlers separately, so that a crawl costs what
/// robots.txt says it may: the refusal when this request is one too many.
pub(crate) fn pace_crawler(app: &App, req: &Request) -> Option<Response> {
    let bot = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_bot);
    if bot
        && let Some(ip) = client_ip(req)
        && let Err(wait) = app.bots().check(ip)
    {
        metrics::counter!("mantissa_requests_refused_total", "reason" => "crawler").increment(1);
        return Some(refusal_response(Refusal::RateLimited(wait)));
    }
    None
}

/// Security headers on every response (a handler's own win).
///
/// Every answer gets the content security policy (whose `frame-ancestors`
/// is what keeps pages out of other sites' frames), `nosniff` and the
/// referrer policy. Documents (HTML, XHTML, SVG) also get the two headers
/// that only act on a document a browser shows: `X-Frame-Options`, for
/// browsers older than `frame-ancestors`, and the opener policy, which
/// cuts a window's ties to the window that opened it. Leaving those two off
/// other answers keeps a small answer's header map within the room it was
/// made with (six entries), instead of growing it on every request.
pub(crate) fn add_security_headers(h: &mut HeaderMap) {
    const EVERY_ANSWER: [(HeaderName, HeaderValue); 3] = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
            ),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ),
    ];
    const DOCUMENTS: [(HeaderName, HeaderValue); 2] = [
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    let document = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| is_document(ct.as_bytes()));
    let extra = if document { &DOCUMENTS[..] } else { &[] };
    h.reserve(EVERY_ANSWER.len() + extra.len());
    for (name, value) in EVERY_ANSWER.iter().chain(extra) {
        h.entry(name.clone()).or_insert(value.clone());
    }
}

/// Whether a content type is one a browser shows as a document that can be
/// framed or run script.
fn is_document(content_type: &[u8]) -> bool {
    ["text/html", "application/xhtml+xml", "image/svg+xml"]
        .iter()
        .any(|d| {
            content_type
                .get(..d.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(d.as_bytes()))
        })
}

/// The largest answer given an ETag (1 MiB): larger ones are sent as they
/// are (see [`Conditional::apply`]).
pub(crate) const MAX_TAGGED_BYTES: u64 = 1024 * 1024;

/// When each page version (by ETag) was first served: its Last-Modified.
pub struct FirstSeen {
    /// Tells this map from others in the thread's memo.
    id: u64,
    map: DashMap<String, SystemTime>,
}

impl Default for FirstSeen {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        FirstSeen {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            map: DashMap::new(),
        }
    }
}

/// What the thread's memo keeps of the last version it looked up.
struct Seen {
    map: u64,
    etag: Etag,
    at: SystemTime,
    /// `at` as a `Last-Modified` value, formatted once.
    header: HeaderValue,
}

thread_local! {
    /// The last version this thread looked up: a page in demand is the
    /// same version request after request, and this spares the shared
    /// map's lock, which every thread would otherwise take on each one,
    /// and the formatting of its date.
    static LAST_SEEN: std::cell::RefCell<Option<Seen>> = const { std::cell::RefCell::new(None) };
}

impl FirstSeen {
    /// When the version was first served, and that time as a header value.
    fn get(&self, etag: &Etag) -> (SystemTime, HeaderValue) {
        let memo = LAST_SEEN.with_borrow(|last| match last {
            Some(seen) if seen.map == self.id && seen.etag == *etag => {
                Some((seen.at, seen.header.clone()))
            }
            _ => None,
        });
        if let Some(seen) = memo {
            return seen;
        }
        let at = self.lookup(etag.as_str());
        let header = HeaderValue::from_str(&httpdate::fmt_http_date(at)).expect("date");
        LAST_SEEN.with_borrow_mut(|last| {
            *last = Some(Seen {
                map: self.id,
                etag: *etag,
                at,
                header: header.clone(),
            })
        });
        (at, header)
    }

    fn lookup(&self, etag: &str) -> SystemTime {
        if let Some(seen) = self.map.get(etag) {
            return *seen;
        }
        if self.map.len() > 50_000 {
            self.map.clear();
        }
        *self
            .map
            .entry(etag.to_string())
            .or_insert_with(SystemTime::now)
    }
}

/// The strong ETag of a page's bytes: a 128-bit XXH3 hash in hex, quoted,
/// kept on the stack.
///
/// Not a cryptographic hash, on purpose: an ETag only has to change when
/// the page does (a collision would need someone to make two versions of
/// the same page collide, and would cost a stale page, not a secret), and
/// SHA-256 took about a microsecond of every HTML page (`bench/README.md`,
/// "Web"), twenty times what this does.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Etag([u8; 34]);

impl Etag {
    fn of(bytes: &[u8]) -> Etag {
        let hash = xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes();
        let mut tag = [b'"'; 34];
        hex::encode_to_slice(hash, &mut tag[1..33]).expect("32 hex digits");
        Etag(tag)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex is ASCII")
    }
}

/// Whether an `If-None-Match` value names `etag` (or `*`), by weak
/// comparison as RFC 9110 has it for this header: `W/"x"` matches `"x"`,
/// and a compressed copy's tag is the weak form of the page's.
pub(crate) fn none_match(if_none_match: &HeaderValue, etag: &str) -> bool {
    if_none_match.to_str().is_ok_and(|v| {
        v.split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
    })
}

/// What a GET or HEAD request said it has: the validators of conditional
/// GET.
pub(crate) struct Conditional {
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<SystemTime>,
}

impl Conditional {
    /// The request's validators; `None` for methods that are not GET or HEAD.
    pub(crate) fn of(req: &Request) -> Option<Conditional> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return None;
        }
        Some(Conditional {
            if_none_match: req.headers().get(header::IF_NONE_MATCH).cloned(),
            if_modified_since: req
                .headers()
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        })
    }

    /// ETag and Last-Modified on anonymous pages, and 304 for a client that
    /// has the current version, so that a crawl costs little. Pages that set
    /// cookies are personal and left alone, and so are answers that are not
    /// already whole in memory or are larger than [`MAX_TAGGED_BYTES`]: the
    /// tag is a hash of the bytes, and collecting a large or streamed answer
    /// to hash it would hold all of it in memory for every request at once.
    pub(crate) async fn apply(self, app: &App, response: Response) -> Response {
        let Conditional {
            if_none_match,
            if_modified_since,
        } = self;
        let cacheable = response.status() == StatusCode::OK
            && response
                .body()
                .size_hint()
                .exact()
                .is_some_and(|n| n <= MAX_TAGGED_BYTES)
            && !response.headers().contains_key(header::SET_COOKIE)
            && !response
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("no-store"))
            && !response.headers().contains_key(header::ETAG)
            && response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.starts_with("text/html") || ct.starts_with("application/json")
                });
        if !cacheable {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        // Whole already (its exact size is known): this takes its bytes.
        let bytes = match axum::body::to_bytes(body, MAX_TAGGED_BYTES as usize).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return WebError::Internal(format!("reading a page to tag it: {e}"))
                    .into_response();
            }
        };
        let etag = Etag::of(&bytes);
        let (modified, last_modified) = app.first_seen().get(&etag);
        let fresh = match (&if_none_match, if_modified_since) {
            (Some(inm), _) => none_match(inm, etag.as_str()),
            (None, Some(since)) => modified
                .duration_since(since)
                .map_or(true, |d| d < Duration::from_secs(1)),
            (None, None) => false,
        };
        parts.headers.insert(
            header::ETAG,
            HeaderValue::from_bytes(&etag.0).expect("quoted hex"),
        );
        parts.headers.insert(header::LAST_MODIFIED, last_modified);
        parts
            .headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-cache"));
        if fresh {
            parts.status = StatusCode::NOT_MODIFIED;
            parts.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(parts, Body::empty());
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_is_the_quoted_hash_of_the_bytes() {
        let tag = Etag::of(b"<p>page</p>");
        let text = tag.as_str();
        assert_eq!(text.len(), 34);
        assert!(text.starts_with('"') && text.ends_with('"'), "{text}");
        assert!(text[1..33].bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        assert!(tag == Etag::of(b"<p>page</p>"));
        assert!(tag != Etag::of(b"<p>page!</p>"));
    }

    #[test]
    fn the_crawler_limiter_forgets_addresses_it_no_longer_needs() {
        let mut bots = bot_limiter(1);
        for i in 0..100u8 {
            assert!(bots.check(IpAddr::from([10, 0, 0, i])).is_ok());
        }
        assert_eq!(bots.limiter.len(), 100);
        // Two seconds later (governor keeps a key until its allowance has
        // been full for one period) and a minute after the last pruning,
        // the next check forgets them.
        std::thread::sleep(Duration::from_millis(2100));
        bots.started -= Duration::from_secs(PRUNE_SECS);
        assert!(bots.check(IpAddr::from([10, 0, 1, 0])).is_ok());
        assert_eq!(bots.limiter.len(), 1, "only the newest address is kept");
        // Pruning waits for the next minute.
        for i in 0..10u8 {
            assert!(bots.check(IpAddr::from([10, 0, 2, i])).is_ok());
        }
        assert_eq!(bots.limiter.len(), 11);
    }
}
