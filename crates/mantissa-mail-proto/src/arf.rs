//! Feedback reports (ARF, RFC 5965): complaints.
//!
//! The standard form is a `multipart/report; report-type=feedback-report`
//! whose `message/feedback-report` part names the feedback type and,
//! when the provider shares it, the complaining recipient
//! (`Original-Rcpt-To`). Many providers redact it; then the reported
//! message's own `To` is the complainer (its `X-HmXmrOriginalRecipient`
//! at Microsoft, whose reports are otherwise standard).

use mail_parser::{Message, MimeHeaders};

use crate::report::{Format, Kind, Reason, Recipient, Report, Severity};
use crate::{Parts, address, dsn};

pub(crate) fn read(message: &Message<'_>, parts: &Parts<'_>) -> Option<Report> {
    let report_type_is_feedback = message
        .root_part()
        .content_type()
        .and_then(|ct| ct.attribute("report-type"))
        .is_some_and(|t| t.eq_ignore_ascii_case("feedback-report"));
    if parts.feedback.is_empty() && !report_type_is_feedback {
        return None;
    }
    let mut report = Report::new(Kind::Complaint, Format::Arf);
    let mut recipients: Vec<String> = Vec::new();
    for body in &parts.feedback {
        for (name, value) in dsn::fields(body) {
            match name.as_str() {
                "feedback-type" if report.feedback_type.is_none() => {
                    report.feedback_type = Some(value.trim().to_ascii_lowercase());
                }
                "original-rcpt-to" | "removal-recipient" => {
                    recipients.extend(address::first_in(&value));
                }
                _ => {}
            }
        }
    }
    if recipients.is_empty() {
        recipients = reported_recipients(parts);
    }
    for address in recipients {
        if report.recipients.iter().any(|r| r.address == address) {
            continue;
        }
        report.recipients.push(Recipient {
            address,
            severity: Severity::Permanent,
            status: None,
            reason: Reason::Complaint,
            diagnostic: report.feedback_type.clone(),
        });
    }
    Some(report)
}

/// The reported message's recipients: a Microsoft recipient header, else
/// its `To`.
fn reported_recipients(parts: &Parts<'_>) -> Vec<String> {
    let fields: Vec<(String, String)> = match (parts.original, parts.original_headers.as_deref()) {
        (Some(m), _) => m
            .headers_raw()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
            .collect(),
        (None, Some(h)) => dsn::fields(h),
        (None, None) => return Vec::new(),
    };
    for wanted in ["x-hmxmroriginalrecipient", "x-original-to", "to"] {
        let found: Vec<String> = fields
            .iter()
            .filter(|(name, _)| name == wanted)
            .flat_map(|(_, value)| address::all_in(value).into_iter().map(|(a, _)| a))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}
