//! What the site did lately, for the admin console's charts: requests,
//! sign-ups, failed log-ins and server errors, counted in memory and
//! written to the site store once a minute.
//!
//! Nothing is written per request: requests and errors are the web layer's
//! running totals ([`mantissa_web::App::requests_and_errors`]), sign-ups
//! and failed log-ins two counters here. A task writes what was added
//! since its last turn into two [`Activity`] rows, the minute's and the
//! hour's, every [`FLUSH_EVERY`] (and when the console's overview is
//! opened, so that it shows the present). Minutes are kept two hours, for
//! the last hour's chart; hours [`KEEP_HOURS`], for the day's and the
//! month's (a day's bar is the sum of its hours).
//!
//! The counts are this process's: on a site served by several nodes, each
//! writes its own into the same rows, adding to them.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use mantissa_store::{Item, Site, StoreError, Timestamp};

/// How often counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(60);

/// How long hour rows are kept.
pub const KEEP_HOURS: i64 = 32 * 24;

/// Minute rows are kept this long.
const KEEP_MINUTES: i64 = 120;

/// Counts of one minute or one hour.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.activity", version = 1, unique(span, start))]
pub struct Activity {
    /// `60` for a minute's row, `3600` for an hour's.
    pub span: i64,
    /// Its start, in seconds since 1970 (a multiple of `span`).
    pub start: i64,
    /// Requests answered.
    pub requests: i64,
    /// Accounts signed up.
    pub signups: i64,
    /// Log-ins refused for a wrong password or code.
    pub login_failures: i64,
    /// Answers that were server errors (5xx).
    pub errors: i64,
}

/// The accounts' own counts, and what was last written of the web's.
#[derive(Default)]
pub(crate) struct Counters {
    signups: AtomicU64,
    login_failures: AtomicU64,
    /// The web's totals of requests and errors when last written.
    written: Mutex<(u64, u64)>,
    /// Whether the task that writes every minute runs.
    started: AtomicBool,
}

/// What is added to the rows in one write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Delta {
    requests: i64,
    signups: i64,
    login_failures: i64,
    errors: i64,
}

impl Counters {
    pub(crate) fn signed_up(&self) {
        self.signups.fetch_add(1, Relaxed);
    }

    pub(crate) fn login_failed(&self) {
        self.login_failures.fetch_add(1, Relaxed);
    }

    /// Starts the task that writes the counts every minute, once, if
    /// there is a runtime to run it on.
    pub(crate) fn start(
        &self,
        site: &Site,
        app: &mantissa_web::App,
        acc: &std::sync::Arc<crate::Accounts>,
    ) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Relaxed) {
            return;
        }
        let (site, app, acc) = (site.clone(), app.clone(), std::sync::Arc::downgrade(acc));
        handle.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(acc) = acc.upgrade() else { return };
                if let Err(e) = acc.activity.flush(&site, app.requests_and_errors()).await {
                    tracing::warn!(error = %e, "the minute's activity was not written");
                }
            }
        });
    }

    /// Writes what was counted since the last write into this minute's and
    /// this hour's rows; `web` is the web's running totals of requests and
    /// errors. What cannot be written is counted again next time.
    pub(crate) async fn flush(&self, site: &Site, web: (u64, u64)) -> Result<(), StoreError> {
        let (requests, errors) = {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let d = (
                web.0.saturating_sub(written.0),
                web.1.saturating_sub(written.1),
            );
            *written = web;
            d
        };
        let delta = Delta {
            requests: requests as i64,
            errors: errors as i64,
            signups: self.signups.swap(0, Relaxed) as i64,
            login_failures: self.login_failures.swap(0, Relaxed) as i64,
        };
        let now = Timestamp::now().as_micros() / 1_000_000;
        let result = site
            .store()
            .write(move |tx| {
                for span in [60, 3600] {
                    if delta == Delta::default() {
                        break;
                    }
                    let start = now - now.rem_euclid(span);
                    let row = tx
                        .query::<Activity>()
                        .filter(Activity::span.eq(span))
                        .filter(Activity::start.eq(start))
                        .first()?;
                    match row {
                        Some(mut r) => {
                            r.requests += delta.requests;
                            r.signups += delta.signups;
                            r.login_failures += delta.login_failures;
                            r.errors += delta.errors;
                            tx.update(&r)?;
                        }
                        None => {
                            tx.insert(&Activity {
                                span,
                                start,
                                requests: delta.requests,
                                signups: delta.signups,
                                login_failures: delta.login_failures,
                                errors: delta.errors,
                            })?;
                        }
                    }
                }
                tx.delete_where(
                    Activity::span
                        .eq(60)
                        .and(Activity::start.lt(now - KEEP_MINUTES * 60)),
                )?;
                tx.delete_where(
                    Activity::span
                        .eq(3600)
                        .and(Activity::start.lt(now - KEEP_HOURS * 3600)),
                )?;
                Ok(())
            })
            .await;
        if result.is_err() {
            // Counted again at the next write.
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            written.0 = written.0.saturating_sub(requests);
            written.1 = written.1.saturating_sub(errors);
            self.signups.fetch_add(delta.signups as u64, Relaxed);
            self.login_failures
                .fetch_add(delta.login_failures as u64, Relaxed);
        }
        result
    }
}

/// The periods a chart can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// 60 bars of a minute.
    Hour,
    /// 24 bars of an hour.
    Day,
    /// 30 bars of a day.
    Month,
}

impl Period {
    /// From `hour`, `day` or `month`; the hour for anything else.
    pub fn from_key(key: &str) -> Period {
        match key {
            "day" => Period::Day,
            "month" => Period::Month,
            _ => Period::Hour,
        }
    }

    /// Its key in a URL.
    pub fn key(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The rows it reads (their span) and the bars it shows (their width
    /// and number).
    fn shape(self) -> (i64, i64, usize) {
        match self {
            Period::Hour => (60, 60, 60),
            Period::Day => (3600, 3600, 24),
            Period::Month => (3600, 86_400, 30),
        }
    }
}

/// One series of a chart: each bar's start (seconds since 1970) and count.
pub type Series = Vec<(i64, i64)>;

/// Requests, sign-ups, failed log-ins and errors over `period` up to now,
/// one bar per minute, hour or day (oldest first).
pub async fn series(site: &Site, period: Period) -> Result<[Series; 4], StoreError> {
    let (span, bar, bars) = period.shape();
    let now = Timestamp::now().as_micros() / 1_000_000;
    let last = now - now.rem_euclid(bar);
    let first = last - bar * (bars as i64 - 1);
    let rows = site
        .store()
        .read(move |r| {
            r.query::<Activity>()
                .filter(Activity::span.eq(span))
                .filter(Activity::start.ge(first))
                .all()
        })
        .await?;
    let mut out: [Series; 4] = Default::default();
    for s in out.iter_mut() {
        *s = (0..bars).map(|i| (first + bar * i as i64, 0)).collect();
    }
    for r in rows {
        let i = ((r.start - first) / bar) as usize;
        if i < bars {
            out[0][i].1 += r.requests;
            out[1][i].1 += r.signups;
            out[2][i].1 += r.login_failures;
            out[3][i].1 += r.errors;
        }
    }
    Ok(out)
}

/// The UTC time of `secs` as a chart labels it: `14:05` within a day,
/// `7 Dec` for a day's bar.
fn label(secs: i64, period: Period) -> String {
    let t = Timestamp::from_micros(secs * 1_000_000).to_string();
    // RFC 3339: 2026-12-07T14:05:00Z
    match period {
        Period::Month => {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let month: usize = t.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
            let day: u32 = t.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
            format!("{day} {}", MONTHS[(month - 1).min(11)])
        }
        _ => t.get(11..16).unwrap_or("").to_string(),
    }
}

/// A bar chart of `series` as an SVG element, drawn here so the page needs
/// no script: one bar per entry, each with a tooltip giving its count and
/// time, and the highest count written at the top. `what` is the plural
/// noun counted ("requests"), `one` its singular.
pub fn bar_chart(series: &[(i64, i64)], period: Period, one: &str, what: &str) -> String {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    const TOP: f64 = 14.0;
    let max = series.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let total: i64 = series.iter().map(|(_, n)| *n).sum();
    let step = W / series.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {}" role="img" aria-label="{total} {what} over the last {}" preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">"#,
        H + 16.0,
        period.key(),
    );
    let _ = write!(
        svg,
        r#"<line x1="0" y1="{H}" x2="{W}" y2="{H}" stroke="currentColor" stroke-opacity="0.3"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="2" y="10" font-size="10" fill="currentColor">{max}</text>"#
    );
    for (i, (start, n)) in series.iter().enumerate() {
        let h = if max > 0 {
            (*n as f64 / max as f64) * (H - TOP)
        } else {
            0.0
        };
        let x = i as f64 * step;
        let noun = if *n == 1 { one } else { what };
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="currentColor" fill-opacity="0.6"><title>{n} {noun}, {} UTC</title></rect>"#,
            H - h,
            (step - 1.0).max(1.0),
            label(*start, period),
        );
    }
    if let (Some(first), Some(last)) = (series.first(), series.last()) {
        let _ = write!(
            svg,
            r#"<text x="0" y="{}" font-size="10" fill="currentColor">{}</text><text x="{W}" y="{}" font-size="10" text-anchor="end" fill="currentColor">{}</text>"#,
            H + 12.0,
            label(first.0, period),
            H + 12.0,
            label(last.0, period),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_bar_per_entry_scaled_to_the_highest() {
        let series = vec![(0, 0), (60, 5), (120, 10)];
        let svg = bar_chart(&series, Period::Hour, "request", "requests");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(
            svg.contains("aria-label=\"15 requests over the last hour\""),
            "{svg}"
        );
        assert!(
            svg.contains("<title>10 requests, 00:02 UTC</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("height=\"106.0\""),
            "the highest is full height: {svg}"
        );
        assert!(svg.contains(">00:00</text>") && svg.contains(">00:02</text>"));
        let days = bar_chart(&[(86_400 * 340, 1)], Period::Month, "sign-up", "sign-ups");
        assert!(
            days.contains("<title>1 sign-up, 7 Dec UTC</title>"),
            "{days}"
        );
    }

    #[tokio::test]
    async fn counts_are_written_once_a_minute_into_minutes_and_hours() {
        let dir = tempfile::tempdir().unwrap();
        let site = Site::open(dir.path().join("site")).unwrap();
        let c = Counters::default();
        c.signed_up();
        c.login_failed();
        c.login_failed();
        c.flush(&site, (10, 1)).await.unwrap();
        c.flush(&site, (15, 1)).await.unwrap();
        // Sums, not the last bar: the minute may have turned meanwhile.
        let sum = |s: &Series| s.iter().map(|(_, n)| n).sum::<i64>();
        let [requests, signups, failures, errors] = series(&site, Period::Hour).await.unwrap();
        assert_eq!(requests.len(), 60);
        assert_eq!(sum(&requests), 15, "the second write adds 5");
        assert_eq!(sum(&signups), 1);
        assert_eq!(sum(&failures), 2);
        assert_eq!(sum(&errors), 1);
        let [requests, ..] = series(&site, Period::Day).await.unwrap();
        assert_eq!((requests.len(), sum(&requests)), (24, 15));
        let [requests, ..] = series(&site, Period::Month).await.unwrap();
        assert_eq!((requests.len(), sum(&requests)), (30, 15));
        let rows = site
            .store()
            .read(|r| r.query::<Activity>().count())
            .await
            .unwrap();
        assert!(
            (2..=4).contains(&rows),
            "a row a minute and one an hour: {rows}"
        );
    }
}
