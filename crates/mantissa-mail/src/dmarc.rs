//! DMARC aggregate reports (RFC 7489 §7.2): what the large receivers say,
//! once a day, of the mail they saw claiming to come from the site's
//! domain — how much of it passed DKIM or SPF in alignment, and from which
//! addresses the mail that failed both came (someone spoofing the domain,
//! or a service sending for the site that is not set up yet).
//!
//! The site asks for them with a DMARC record naming its own address
//! [`REPORTS`]`@domain` ([`record_for`]); the inbound SMTP server hands
//! what arrives there to [`receive`], which reads the report with
//! `mail-auth` (XML, gzip or zip, as the receivers send it) and keeps a
//! summary of each in the site store ([`DmarcReport`]), once per report
//! (receivers send again). `mantissa mail dmarc` lists them.

use std::collections::BTreeMap;

use mail_auth::report::{DmarcResult, Report};
use mantissa_store::{Item, Site, StoreError, Stored, Timestamp};
use serde::Serialize;

use crate::MailError;

/// The local part of the site's address for aggregate reports.
pub const REPORTS: &str = "dmarc-reports";

/// The largest report accepted, uncompressed.
const MAX_REPORT_BYTES: usize = 10 * 1024 * 1024;

/// Sources listed in a summary, most messages first.
const SOURCES_LISTED: usize = 10;

/// One aggregate report, summarised, kept in the site store.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.dmarc_report", version = 1, unique(org, report_id))]
pub struct DmarcReport {
    /// Who sent it (`google.com`).
    pub org: String,
    /// Its id, unique for the sender.
    pub report_id: String,
    /// The domain it is about.
    pub domain: String,
    /// The period it covers.
    #[item(index)]
    pub begin: Timestamp,
    /// The end of that period.
    pub end: Timestamp,
    /// Messages seen.
    pub messages: i64,
    /// Of those, passing DMARC (DKIM or SPF aligned).
    pub passed: i64,
    /// Of those, failing aligned DKIM.
    pub dkim_failed: i64,
    /// Of those, failing aligned SPF.
    pub spf_failed: i64,
    /// Where mail failing both came from: `ADDRESS COUNT` a line, most
    /// first, at most ten.
    pub failing_sources: String,
    /// When it arrived.
    pub received_at: Timestamp,
}

/// What [`receive`] did with a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Received {
    /// Kept: its summary.
    Kept {
        /// The sender.
        org: String,
        /// The domain.
        domain: String,
        /// Messages seen.
        messages: i64,
        /// Passing DMARC.
        passed: i64,
    },
    /// Had it already (receivers send again).
    Again,
}

/// The DMARC record to publish for `domain`: asks for aggregate reports at
/// the site's address and, to begin with, for no action on failures
/// (`p=none`; raise it to `quarantine`, then `reject`, once the reports
/// show the site's own mail passing).
pub fn record_for(domain: &str) -> String {
    format!("_dmarc.{domain}. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:{REPORTS}@{domain}\"")
}

/// Reads one report (a whole message as it arrived) and keeps its summary.
pub async fn receive(site: &Site, raw: &[u8]) -> Result<Received, MailError> {
    let report = Report::parse_rfc5322(raw, MAX_REPORT_BYTES)
        .map_err(|e| MailError::Build(format!("not a DMARC aggregate report: {e:?}")))?;
    let summary = summarise(&report);
    site.store()
        .write(move |tx| -> Result<Received, StoreError> {
            let known = tx
                .query::<DmarcReport>()
                .filter(DmarcReport::org.eq(summary.org.as_str()))
                .filter(DmarcReport::report_id.eq(summary.report_id.as_str()))
                .first()?;
            if known.is_some() {
                return Ok(Received::Again);
            }
            tx.insert(&summary)?;
            Ok(Received::Kept {
                org: summary.org.clone(),
                domain: summary.domain.clone(),
                messages: summary.messages,
                passed: summary.passed,
            })
        })
        .await
        .map_err(MailError::from)
}

fn summarise(report: &Report) -> DmarcReport {
    let (mut messages, mut passed, mut dkim_failed, mut spf_failed) = (0i64, 0i64, 0i64, 0i64);
    let mut sources: BTreeMap<String, i64> = BTreeMap::new();
    for record in report.records() {
        let n = i64::from(record.count());
        messages += n;
        let dkim = record.dmarc_dkim_result() == DmarcResult::Pass;
        let spf = record.dmarc_spf_result() == DmarcResult::Pass;
        if dkim || spf {
            passed += n;
        } else {
            let ip = record
                .source_ip()
                .map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            *sources.entry(ip).or_default() += n;
        }
        if !dkim {
            dkim_failed += n;
        }
        if !spf {
            spf_failed += n;
        }
    }
    let mut sources: Vec<(String, i64)> = sources.into_iter().collect();
    sources.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let failing_sources = sources
        .iter()
        .take(SOURCES_LISTED)
        .map(|(ip, n)| format!("{ip} {n}"))
        .collect::<Vec<_>>()
        .join("\n");
    let at = |secs: u64| Timestamp::from_micros(secs.saturating_mul(1_000_000) as i64);
    DmarcReport {
        org: report.org_name().to_string(),
        report_id: report.report_id().to_string(),
        domain: report.domain().to_string(),
        begin: at(report.date_range_begin()),
        end: at(report.date_range_end()),
        messages,
        passed,
        dkim_failed,
        spf_failed,
        failing_sources,
        received_at: Timestamp::now(),
    }
}

/// The reports kept, the latest period first.
pub async fn recent(site: &Site, limit: u64) -> Result<Vec<DmarcReport>, StoreError> {
    Ok(site
        .store()
        .read(move |r| {
            r.query::<DmarcReport>()
                .order_by(DmarcReport::begin.desc())
                .limit(limit)
                .all()
        })
        .await?
        .into_iter()
        .map(Stored::into_inner)
        .collect())
}
