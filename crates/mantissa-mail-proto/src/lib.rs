//! Mantissa's mail wire formats, parsed without I/O: bytes in, types out.
//!
//! This crate owns the reading of the mail that comes back: bounces in
//! every form they arrive in, auto-replies (which are not bounces), and
//! complaints (ARF feedback reports), with [`parse`] as the one entry; and
//! the VERP return paths ([`verp`]) that let a bounce name its message and
//! recipient. It must not touch a store, the network, a clock or a
//! runtime: what a bounce *does* (marking an address as failing,
//! suppressing mail, telling applications) belongs to `mantissa-mail`,
//! which calls this crate. Keeping it pure keeps it fast to test with
//! tables of real messages (`tests/samples/`), fuzzable, and usable from
//! the command line (`mantissa mail bounce FILE.eml`).
//!
//! # Why the recognisers are written here
//!
//! MIME is `mail-parser`'s job. But no maintained Rust crate classifies
//! bounce *messages* (crates.io and docs.rs were searched): the crates that
//! speak of DSNs generate them (a mail server's job), and the bounce
//! classifier in KumoMTA (`bounce_classify`) sorts the reply lines of an
//! SMTP session, which an outbound queue sees itself, not the messages
//! that arrive days later from other servers; `mail-auth` reads ARF
//! reports but depends on a DNS resolver, which this crate must not. The reference implementations are Sisimai (Perl, Ruby, Go)
//! and Perl's `Mail::DeliveryStatus::BounceParser`; this crate follows
//! the same approach, on a smaller scale, and is tested on Sisimai's
//! public collection of real bounces.
//!
//! # How a message is read
//!
//! In this order, the first that applies decides:
//!
//! 1. A feedback report (`message/feedback-report` part, RFC 5965) is a
//!    complaint; the complainer is its `Original-Rcpt-To`, else the
//!    reported message's `To`.
//! 2. A delivery status report (`message/delivery-status` part, RFC 3464,
//!    or its fields written into the text by servers that do not make a
//!    part of them) gives one recipient per group whose action is `failed`
//!    or `delayed`; a report of deliveries only is not a bounce.
//! 3. A message that looks like a bounce (sent by a mail system, a bounce
//!    subject, the opening sentences of Exim, qmail, Postfix, Sendmail,
//!    Exchange, Gmail, Yahoo, Domino, GroupWise, …) is read as text: the
//!    addresses standing at the head of a line in the notice (before the
//!    copy of the returned message), each with the lines under it as its
//!    diagnostic.
//! 4. A message marked as automatic (`Auto-Submitted: auto-replied`,
//!    `X-Autoreply`, `Precedence: auto_reply`, an "Out of office" or
//!    "Automatic reply" subject) is an auto-reply.
//! 5. Anything else is not a bounce.
//!
//! For each recipient, the severity comes from the status code (`5.x.x`
//! permanent, `4.x.x` temporary), else the SMTP reply code, else the words
//! around it ("permanent error", "will retry"); the reason class from the
//! server's words first, then the status code (see `classify.rs`).
//!
//! Nothing here panics on any input (a property test feeds it arbitrary
//! and mangled bytes): what is not a mail message at all is an [`Error`].

mod address;
mod arf;
mod classify;
mod dsn;
mod report;
mod text;
pub mod verp;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

pub use report::{Format, Kind, Reason, Recipient, Report, Severity};
pub use verp::Verp;

/// Why the input is not a mail message at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Nothing but white space.
    #[error("the message is empty")]
    Empty,
    /// The first line is not a header field.
    #[error(
        "the first line is not a header field ({line:?}): a mail message starts with fields like \"From: …\""
    )]
    NotAHeader {
        /// The first line, cut to 60 characters.
        line: String,
    },
    /// Header-like lines, but not one field a message has.
    #[error("no header field of a mail message (From, To, Subject, Date, Received, …) was found")]
    NoMailHeaders,
}

/// Reads one message: a bounce, a complaint, an auto-reply or none of
/// these. `raw` is the message as it arrived (an mbox `From ` line first
/// is allowed).
///
/// ```
/// let raw = b"From: MAILER-DAEMON@mx.example.org\r\n\
///     To: bounces+q81.ann=example.net@example.org\r\n\
///     Subject: Undelivered Mail Returned to Sender\r\n\r\n\
///     <ann@example.net>: host mx.example.net said: 550 5.1.1 User unknown\r\n";
/// let report = mantissa_mail_proto::parse(raw).unwrap();
/// assert_eq!(report.kind, mantissa_mail_proto::Kind::Bounce);
/// assert_eq!(report.recipients[0].address, "ann@example.net");
/// assert_eq!(report.recipients[0].reason, mantissa_mail_proto::Reason::UnknownUser);
/// assert_eq!(report.verp.unwrap().tag, "q81");
/// ```
pub fn parse(raw: &[u8]) -> Result<Report, Error> {
    let raw = check_is_mail(raw)?;
    let Some(message) = MessageParser::default().parse(raw) else {
        return Err(Error::NoMailHeaders);
    };
    if !message.headers().iter().any(|h| {
        use mail_parser::HeaderName::*;
        matches!(
            h.name,
            From | To
                | Subject
                | Date
                | Received
                | ReturnPath
                | MessageId
                | ContentType
                | Sender
                | Cc
        )
    }) {
        return Err(Error::NoMailHeaders);
    }
    let parts = Parts::of(&message);
    let mut report = arf::read(&message, &parts)
        .or_else(|| read_dsn(&message, &parts))
        .or_else(|| text::read(&message, &parts))
        .unwrap_or_else(|| {
            if text::is_auto_reply(&message) {
                Report::new(Kind::AutoReply, Format::Headers)
            } else {
                Report::new(Kind::NotBounce, Format::None)
            }
        });
    if matches!(report.kind, Kind::Bounce | Kind::Complaint) {
        if report.original_message_id.is_none() {
            report.original_message_id = parts.original_message_id();
        }
        report.verp = verp_of(&message);
    }
    Ok(report)
}

/// Skips an mbox `From ` line and refuses what does not begin with a
/// header field.
fn check_is_mail(raw: &[u8]) -> Result<&[u8], Error> {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(Error::Empty)?;
    let mut raw = &raw[start..];
    if raw.starts_with(b"From ") {
        let next = raw
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| i + 1);
        raw = &raw[next..];
    }
    let line_end = raw
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(raw.len());
    let line = &raw[..line_end];
    let field = line.iter().position(|&b| b == b':').is_some_and(|colon| {
        // RFC 5322 allows any printable character in a field name; real
        // ones are letters, digits, dashes and underscores.
        colon > 0
            && line[..colon]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !field {
        let shown: String = String::from_utf8_lossy(line).chars().take(60).collect();
        return Err(Error::NotAHeader { line: shown });
    }
    Ok(raw)
}

/// The parts of a report, sorted by what they are.
pub(crate) struct Parts<'m> {
    /// `message/delivery-status` bodies.
    pub delivery_status: Vec<String>,
    /// `message/feedback-report` bodies.
    pub feedback: Vec<String>,
    /// The human-readable text, all text parts joined (HTML without tags).
    pub text: String,
    /// The returned message, when attached as a message.
    pub original: Option<&'m Message<'m>>,
    /// The returned message's headers, when attached as text.
    pub original_headers: Option<String>,
}

impl<'m> Parts<'m> {
    fn of(message: &'m Message<'m>) -> Parts<'m> {
        let mut parts = Parts {
            delivery_status: Vec::new(),
            feedback: Vec::new(),
            text: String::new(),
            original: None,
            original_headers: None,
        };
        for part in &message.parts {
            let (ctype, subtype) = part
                .content_type()
                .map(|ct| {
                    (
                        ct.ctype().to_ascii_lowercase(),
                        ct.subtype().unwrap_or("").to_ascii_lowercase(),
                    )
                })
                .unwrap_or_else(|| ("text".into(), "plain".into()));
            let contents = || String::from_utf8_lossy(part.contents()).into_owned();
            match (ctype.as_str(), subtype.as_str(), &part.body) {
                (_, _, PartType::Multipart(_)) => {}
                (_, _, PartType::Message(m)) => {
                    parts.original.get_or_insert(m);
                }
                ("message", "delivery-status" | "global-delivery-status", _) => {
                    parts.delivery_status.push(contents())
                }
                ("message", "feedback-report", _) => parts.feedback.push(contents()),
                ("text", "rfc822-headers" | "global-headers", _)
                | ("message", "rfc822" | "global" | "rfc822-headers", _) => {
                    parts.original_headers.get_or_insert_with(contents);
                }
                (_, _, PartType::Text(t)) => {
                    parts.text.push_str(t);
                    parts.text.push('\n');
                }
                (_, _, PartType::Html(h)) => {
                    parts.text.push_str(&text::strip_html(h));
                    parts.text.push('\n');
                }
                _ => {}
            }
        }
        parts
    }

    /// The returned message's Message-ID: from the attached message or
    /// headers, else from a `Message-ID:` line after the notice.
    fn original_message_id(&self) -> Option<String> {
        if let Some(id) = self.original.and_then(|m| m.message_id()) {
            return Some(id.to_string());
        }
        let from_lines = |text: &str| {
            text.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                if !name.trim().eq_ignore_ascii_case("message-id") {
                    return None;
                }
                let value = value.trim();
                let id = value
                    .strip_prefix('<')
                    .and_then(|v| v.split_once('>'))
                    .map_or(value, |(id, _)| id)
                    .trim();
                (!id.is_empty() && id.contains('@')).then(|| id.to_string())
            })
        };
        if let Some(id) = self.original_headers.as_deref().and_then(from_lines) {
            return Some(id);
        }
        let (_, returned) = text::split_notice(&self.text);
        returned.and_then(from_lines)
    }
}

/// Step 2: a delivery status report.
fn read_dsn(message: &Message<'_>, parts: &Parts<'_>) -> Option<Report> {
    let mut groups: Vec<dsn::Group> = parts
        .delivery_status
        .iter()
        .flat_map(|t| dsn::groups(t))
        .collect();
    if groups.is_empty() {
        // Fields written into the text (some servers do), or into a part
        // mislabelled as text.
        let (notice, _) = text::split_notice(&parts.text);
        groups = dsn::groups(notice);
        groups.retain(|g| g.action.is_some() || g.status.is_some());
    }
    if groups.is_empty() && parts.delivery_status.is_empty() {
        return None;
    }
    let (notice, _) = text::split_notice(&parts.text);
    let mut report = Report::new(Kind::NotBounce, Format::Dsn);
    for group in &groups {
        let Some(address) = group.address() else {
            continue;
        };
        let action = group.action.as_deref().unwrap_or("").to_ascii_lowercase();
        let action = action.trim();
        let mut status = group.status.as_deref().and_then(classify::find_status);
        let diagnostic = group
            .diagnostic
            .as_deref()
            .map(|d| {
                d.split_once(';').map_or(d, |(kind, rest)| {
                    if kind.len() < 20 && !kind.contains(' ') {
                        rest
                    } else {
                        d
                    }
                })
            })
            .map(one_line)
            .filter(|d| !d.is_empty());
        // A generic status (x.0.0) gives way to a precise one in the
        // diagnostic.
        let diag_status = diagnostic.as_deref().and_then(classify::find_status);
        if status.as_deref().is_none_or(|s| s.ends_with(".0.0")) && diag_status.is_some() {
            status = diag_status;
        }
        let delivered = matches!(action, "delivered" | "relayed" | "expanded")
            || (action.is_empty() && status.as_deref().is_some_and(|s| s.starts_with('2')));
        if delivered || status.as_deref().is_some_and(|s| s.starts_with('2')) && action != "failed"
        {
            continue;
        }
        let reply = diagnostic.as_deref().and_then(classify::find_reply_code);
        let severity = if action == "delayed" {
            Severity::Temporary
        } else {
            classify::severity_of(status.as_deref(), reply).unwrap_or(Severity::Permanent)
        };
        let mut reason = classify::reason_from_text(diagnostic.as_deref().unwrap_or(""));
        if reason.is_none() {
            let around = text::context_of(notice, &address);
            reason = classify::reason_from_text(&around);
        }
        let reason = reason.unwrap_or_else(|| {
            status
                .as_deref()
                .map_or(Reason::Other, classify::reason_from_status)
        });
        push_recipient(
            &mut report,
            Recipient {
                address,
                severity,
                status,
                reason,
                diagnostic,
            },
        );
    }
    if !report.recipients.is_empty() {
        report.kind = Kind::Bounce;
    } else if !groups.is_empty() && groups.iter().all(|g| g.address().is_none()) {
        // Groups without a readable address: let the text say who.
        return text::read(message, parts).or(Some(report));
    }
    Some(report)
}

/// Adds a recipient, or merges it into the one with the same address
/// (keeping the more precise status and reason).
pub(crate) fn push_recipient(report: &mut Report, r: Recipient) {
    if let Some(old) = report
        .recipients
        .iter_mut()
        .find(|o| o.address == r.address)
    {
        if old.status.is_none() {
            old.status = r.status;
        }
        if old.reason == Reason::Other {
            old.reason = r.reason;
        }
        if old.diagnostic.is_none() {
            old.diagnostic = r.diagnostic;
        }
        return;
    }
    report.recipients.push(r);
}

/// White space collapsed to single spaces, cut to 400 characters.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if out.len() > 400 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.len() > 400 {
        let mut cut = 400;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// The VERP address the report was delivered to, decoded.
fn verp_of(message: &Message<'_>) -> Option<Verp> {
    for name in [
        "Delivered-To",
        "X-Original-To",
        "Envelope-To",
        "X-Envelope-To",
        "To",
    ] {
        for value in message.header_values(name) {
            let text = match value {
                mail_parser::HeaderValue::Text(t) => t.to_string(),
                mail_parser::HeaderValue::Address(a) => a
                    .iter()
                    .filter_map(|a| a.address.as_deref())
                    .collect::<Vec<_>>()
                    .join(" "),
                mail_parser::HeaderValue::TextList(l) => l.join(" "),
                _ => continue,
            };
            for word in text.split([' ', ',', '<', '>']) {
                if let Some(v) = verp::decode(word) {
                    return Some(v);
                }
            }
        }
    }
    None
}
