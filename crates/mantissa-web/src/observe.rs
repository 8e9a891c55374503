//! What the web tells about itself: the access log, the request rate of the
//! admin console, and the Prometheus metrics of `/metrics`.
//!
//! Every request passes through here twice (when it starts and when its
//! answer is known), so the counting is built not to be felt: counts are
//! spread over per-thread cache lines, and request durations go into fixed
//! buckets rather than through the `metrics` crate's histogram, whose
//! Prometheus recorder keeps every sample until a scrape or an upkeep folds
//! them (a push onto a shared list per request, and a thread draining
//! 100,000 samples a second under load; `bench/README.md`, "Web").

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::app::App;
use crate::protect::client_ip;

/// Cache lines counts are spread over; a thread always uses the same one.
const SHARDS: usize = 8;

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Requests counted per minute, for the admin console. The count of the
/// current minute is spread over a few cache lines, one per thread (modulo
/// their number), so that threads counting at once do not fight over one.
pub struct RequestRate {
    /// The clock the minutes are counted on: the wall clock's seconds at
    /// `epoch`, so that counting a request reads no clock of its own (the
    /// access entry has just read the monotonic one).
    epoch: (Instant, u64),
    minute: AtomicU64,
    current: [Padded; SHARDS],
    previous: AtomicU64,
    /// Requests of the minutes before the current one, all together.
    earlier: AtomicU64,
    /// Answers that were server errors (5xx), all together: rare, so one
    /// counter.
    errors: AtomicU64,
}

impl Default for RequestRate {
    fn default() -> Self {
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        RequestRate {
            epoch: (Instant::now(), unix),
            minute: AtomicU64::new(0),
            current: Default::default(),
            previous: AtomicU64::new(0),
            earlier: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

impl RequestRate {
    fn minute_at(&self, at: Instant) -> u64 {
        (self.epoch.1 + at.saturating_duration_since(self.epoch.0).as_secs()) / 60
    }

    fn current(&self) -> u64 {
        self.current.iter().map(|c| c.0.load(Relaxed)).sum()
    }

    /// Counts a request that started `at`.
    fn count(&self, at: Instant) {
        let now = self.minute_at(at);
        // Only read, unless the minute changed: a write on every request
        // would bounce the cache line between cores.
        if self.minute.load(Relaxed) != now {
            let seen = self.minute.swap(now, Relaxed);
            if seen != now {
                let was: u64 = self.current.iter().map(|c| c.0.swap(0, Relaxed)).sum();
                self.earlier.fetch_add(was, Relaxed);
                self.previous
                    .store(if seen + 1 == now { was } else { 0 }, Relaxed);
            }
        }
        self.current[shard()].0.fetch_add(1, Relaxed);
    }

    /// Counts an answer that was a server error.
    pub(crate) fn count_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Requests counted since the start, all together. Read by the admin
    /// console's activity record, which keeps the difference a minute.
    pub fn total(&self) -> u64 {
        self.earlier.load(Relaxed) + self.current()
    }

    /// Server errors (5xx answers) since the start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Requests in the last full minute, or in this one if it is busier.
    pub fn last_minute(&self) -> u64 {
        let now = self.minute_at(Instant::now());
        let seen = self.minute.load(Relaxed);
        match now.saturating_sub(seen) {
            0 => self.previous.load(Relaxed).max(self.current()),
            1 => self.current(),
            _ => 0,
        }
    }
}

/// One structured log line and metrics per request: what is kept of the
/// request until its response is known.
pub(crate) struct AccessEntry {
    start: Instant,
    /// Method, path, address and User-Agent; only when the access log is on.
    logged: Option<(Method, String, Option<IpAddr>, String)>,
}

impl AccessEntry {
    /// Starts the entry of `req` (and counts it for the admin console).
    pub(crate) fn begin(app: &App, req: &Request) -> AccessEntry {
        let start = Instant::now();
        app.request_rate().count(start);
        let logged =
            tracing::enabled!(target: "mantissa::access", tracing::Level::INFO).then(|| {
                let ua = req
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>();
                (
                    req.method().clone(),
                    req.uri().path().to_string(),
                    client_ip(req),
                    ua,
                )
            });
        AccessEntry { start, logged }
    }

    /// Writes the line and the metrics for `response`.
    pub(crate) fn end(self, response: &Response) {
        let status = response.status().as_u16();
        let elapsed = self.start.elapsed();
        if let Some((method, path, ip, ua)) = self.logged {
            tracing::info!(
                target: "mantissa::access",
                method = %method,
                path = %path,
                status,
                micros = elapsed.as_micros() as u64,
                ip = ?ip,
                user_agent = %ua,
            );
        }
        REQUEST_STATS.record(status, elapsed);
    }
}

/// The upper bounds of the request-duration buckets, in microseconds:
/// Prometheus's default buckets (5 ms to 10 s) and five below them, for a
/// server that answers most requests within a millisecond.
const BOUNDS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The status classes requests are counted by (`status / 100 - 1`).
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests by status class and how long they took, by bucket, spread over
/// per-thread cache lines. Counted here rather than with the `metrics`
/// crate's counters: those are one atomic each, which every thread would
/// write on every request.
struct RequestStats {
    shards: [StatsShard; SHARDS],
}

#[repr(align(128))]
struct StatsShard {
    /// Requests by the first bound they are within; the last counts those
    /// beyond every bound.
    buckets: [AtomicU64; BOUNDS_MICROS.len() + 1],
    micros: AtomicU64,
    by_class: [AtomicU64; STATUS_CLASSES.len()],
}

static REQUEST_STATS: RequestStats = RequestStats::new();

impl RequestStats {
    const fn new() -> RequestStats {
        RequestStats {
            shards: [const {
                StatsShard {
                    buckets: [const { AtomicU64::new(0) }; BOUNDS_MICROS.len() + 1],
                    micros: AtomicU64::new(0),
                    by_class: [const { AtomicU64::new(0) }; STATUS_CLASSES.len()],
                }
            }; SHARDS],
        }
    }

    fn record(&self, status: u16, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1;
        let shard = &self.shards[shard()];
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard.micros.fetch_add(micros, Relaxed);
        shard.by_class[class].fetch_add(1, Relaxed);
    }

    /// The request counter and the histogram in Prometheus's text format.
    fn render(&self, out: &mut String) {
        const NAME: &str = "mantissa_http_request_seconds";
        const TOTAL: &str = "mantissa_http_requests_total";
        let mut counts = [0u64; BOUNDS_MICROS.len() + 1];
        let mut by_class = [0u64; STATUS_CLASSES.len()];
        let mut micros = 0u64;
        for shard in &self.shards {
            for (sum, bucket) in counts.iter_mut().zip(&shard.buckets) {
                *sum += bucket.load(Relaxed);
            }
            for (sum, class) in by_class.iter_mut().zip(&shard.by_class) {
                *sum += class.load(Relaxed);
            }
            micros = micros.wrapping_add(shard.micros.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP {TOTAL} Requests answered, by status class.");
        let _ = writeln!(out, "# TYPE {TOTAL} counter");
        for (class, count) in STATUS_CLASSES.iter().zip(by_class) {
            if count > 0 {
                let _ = writeln!(out, "{TOTAL}{{status=\"{class}\"}} {count}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP {NAME} Time from a request's arrival to its answer's head."
        );
        let _ = writeln!(out, "# TYPE {NAME} histogram");
        let mut cumulative = 0;
        for (bound, count) in BOUNDS_MICROS.iter().zip(&counts) {
            cumulative += count;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{NAME}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += counts[BOUNDS_MICROS.len()];
        let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{NAME}_sum {}", micros as f64 / 1e6);
        let _ = writeln!(out, "{NAME}_count {cumulative}");
    }
}

/// The process's Prometheus recorder, installed on first use (the
/// `metrics` crate has one recorder per process).
///
/// It holds counters and gauges only. Durations are counted in
/// [`RequestStats`]; a histogram recorded through the `metrics` crate
/// would keep every sample until a scrape, so one added later would need
/// the recorder's upkeep (`PrometheusHandle::run_upkeep`) run now and then.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// The text of `/metrics`: the recorder's counters and gauges, then the
/// request counts and durations.
pub(crate) fn metrics_text(recorder: &PrometheusHandle) -> String {
    let mut out = recorder.render();
    REQUEST_STATS.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_render_as_prometheus_counters_and_a_cumulative_histogram() {
        let stats = RequestStats::new();
        for micros in [50, 100, 101, 3_000, 20_000_000] {
            stats.record(200, Duration::from_micros(micros));
        }
        stats.record(404, Duration::from_micros(10));
        let mut text = String::new();
        stats.render(&mut text);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_string()
        };
        assert!(text.contains("# TYPE mantissa_http_request_seconds histogram"));
        // 10, 50 and 100 µs are within 0.1 ms; 101 µs is not.
        assert_eq!(
            line("mantissa_http_request_seconds_bucket{le=\"0.0001\"}"),
            "mantissa_http_request_seconds_bucket{le=\"0.0001\"} 3"
        );
        assert_eq!(
            line("mantissa_http_request_seconds_bucket{le=\"0.00025\"}"),
            "mantissa_http_request_seconds_bucket{le=\"0.00025\"} 4"
        );
        assert_eq!(
            line("mantissa_http_request_seconds_bucket{le=\"0.005\"}"),
            "mantissa_http_request_seconds_bucket{le=\"0.005\"} 5"
        );
        assert_eq!(
            line("mantissa_http_request_seconds_bucket{le=\"10\"}"),
            "mantissa_http_request_seconds_bucket{le=\"10\"} 5"
        );
        assert_eq!(
            line("mantissa_http_request_seconds_bucket{le=\"+Inf\"}"),
            "mantissa_http_request_seconds_bucket{le=\"+Inf\"} 6"
        );
        assert_eq!(
            line("mantissa_http_request_seconds_count"),
            "mantissa_http_request_seconds_count 6"
        );
        assert_eq!(
            line("mantissa_http_request_seconds_sum"),
            "mantissa_http_request_seconds_sum 20.003261"
        );
        assert_eq!(
            line("mantissa_http_requests_total{status=\"2xx\"}"),
            "mantissa_http_requests_total{status=\"2xx\"} 5"
        );
        assert_eq!(
            line("mantissa_http_requests_total{status=\"4xx\"}"),
            "mantissa_http_requests_total{status=\"4xx\"} 1"
        );
        assert!(!text.contains("status=\"5xx\""), "no 5xx: {text}");
    }

    #[test]
    fn the_request_rate_counts_by_minute() {
        let rate = RequestRate::default();
        let now = Instant::now();
        for _ in 0..3 {
            rate.count(now);
        }
        assert_eq!(rate.last_minute(), 3);
        assert_eq!(rate.total(), 3);
        rate.count(now + Duration::from_secs(61));
        assert_eq!(rate.total(), 4);
        rate.count_error();
        assert_eq!(rate.errors(), 1);
    }
}
