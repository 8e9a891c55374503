//! Bounces that are only text: the formats of the servers that send no
//! delivery-status part (qmail, Exim, old Sendmail and Postfix, Exchange
//! 2003, Domino, GroupWise, Gmail and Yahoo in some years, and the many
//! small ones), and auto-replies.
//!
//! There is no grammar to follow, so the reading is by observation of
//! what these notices share: the notice comes first, then a line that
//! announces the copy of the returned message; in the notice, each failing
//! address stands at the head of a line (alone, in angle brackets,
//! followed by a colon, "on DATE", or the server's words), and the lines
//! under it say why. Where no address stands alone, a phrase like
//! "delivery to X" or `RCPT TO:<X>` names it.

use mail_parser::{Address, Message};

use crate::report::{Format, Kind, Reason, Recipient, Report, Severity};
use crate::{Parts, address, classify, one_line, push_recipient};

/// Subjects of bounces (lower case, found anywhere in the subject).
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status notification",
    "delivery notification",
    "failure notice",
    "failure delivery",
    "returned mail",
    "returned to sender",
    "returning message to sender",
    "delivery failure",
    "delivery failed",
    "mail delivery failed",
    "delivery problem",
    "could not be delivered",
    "couldn't be delivered",
    "not delivered",
    "non remis",
    "nondeliverable",
    "non-deliverable",
    "non delivery",
    "non-delivery",
    "mail system error",
    "delivery has failed",
    "unzustellbar",
    "delayed mail",
    "delivery delayed",
    "delivery status",
    "warning: could not send",
    "message delayed",
    "mail failure",
    "unable to deliver",
    "permanent error",
    "delivery report",
    "error sending message",
    "rejected:",
    "returned message",
    "bounce",
    "mail could not be delivered",
    "message not deliverable",
];

/// Opening sentences of bounce notices (lower case).
const BOUNCE_OPENINGS: &[&str] = &[
    "created automatically by mail delivery software",
    "i'm afraid i wasn't able to deliver",
    "i wasn't able to deliver",
    "could not be delivered to one or more",
    "was not delivered to",
    "did not reach the following recipient",
    "did not reach some or all",
    "delivery to the following recipient",
    "delivery has failed to these recipients",
    "failed permanently",
    "permanent fatal errors",
    "the following addresses had",
    "message could not be delivered",
    "wasn't delivered to",
    "unable to deliver your message",
    "we were unable to deliver",
    "could not deliver",
    "this is the mail system at host",
    "message was undeliverable",
    "undeliverable message",
    "the following recipient(s) could not be reached",
    "your message has been rejected",
    "delivery to the following recipients failed",
    "this is a permanent error",
    "has not yet been delivered",
    "delivery attempts will continue",
    "could not be delivered",
];

/// Lines (lower case, after white space) that begin the copy of the
/// returned message.
fn starts_returned_copy(lower: &str, raw_line: &str) -> bool {
    let dashes = lower.starts_with("--") || lower.starts_with("==") || lower.starts_with("**");
    if dashes && !lower.contains("transcript") && !lower.contains("following address") {
        const WORDS: &[&str] = &[
            "original message",
            "copy of",
            "follows",
            "message header",
            "unsent message",
            "returned message",
            "rejected message",
            "the header",
            "headers of",
            "below this line",
            "original mail",
            "message text",
        ];
        if WORDS.iter().any(|w| lower.contains(w)) {
            return true;
        }
    }
    lower.starts_with("original message headers")
        || lower.starts_with("message headers follow")
        || lower.starts_with("content-type: message/rfc822")
        || ((raw_line.starts_with("Return-Path:") || raw_line.starts_with("Received: from"))
            && !raw_line.starts_with(' '))
}

/// The notice and, after the line that announces it, the returned copy.
pub(crate) fn split_notice(text: &str) -> (&str, Option<&str>) {
    let mut offset = 0;
    let mut seen_words = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let lower = trimmed.to_ascii_lowercase();
        if seen_words && starts_returned_copy(&lower, line) {
            return (&text[..offset], Some(&text[offset..]));
        }
        if !trimmed.is_empty() {
            seen_words = true;
        }
        offset += line.len();
    }
    (text, None)
}

/// The lines around `address` in `notice`: its line and the four after.
pub(crate) fn context_of(notice: &str, address: &str) -> String {
    let lower = notice.to_ascii_lowercase();
    let Some(at) = lower.find(address) else {
        return String::new();
    };
    let start = lower[..at].rfind('\n').map_or(0, |i| i + 1);
    notice[start..]
        .lines()
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The address standing at the head of `line`, if one does.
fn leading_address(line: &str) -> Option<String> {
    let t = line.trim_start();
    let t = t
        .trim_start_matches(['*', '-', '•', '\'', '"'])
        .trim_start();
    let (bracketed, body) = match t.strip_prefix('<') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (first, range) = address::all_in(body).into_iter().next()?;
    if range.start != 0 {
        return None;
    }
    let rest = &body[range.end..];
    let rest = if bracketed {
        rest.strip_prefix('>')?
    } else {
        rest
    };
    let rest = rest.trim_start().to_ascii_lowercase();
    if rest.starts_with("wrote") || rest.starts_with("schrieb") {
        return None;
    }
    Some(first)
}

/// Addresses named by a phrase: "delivery to X", "RCPT TO:<X>", …
fn named_addresses(notice: &str) -> Vec<String> {
    const PHRASES: &[&str] = &[
        "delivered to",
        "delivery to",
        "deliver to",
        "deliver your message to",
        "delivering your mail to",
        "delivering your message to",
        "mail to",
        "rcpt to:",
        "recipient:",
        "recipient",
        "address:",
        "addressed to",
        "sent to",
        "message to",
        "for",
    ];
    let mut out = Vec::new();
    for line in notice.lines() {
        let lower = line.to_ascii_lowercase();
        for phrase in PHRASES {
            let mut from = 0;
            while let Some(at) = lower[from..].find(phrase) {
                let after = from + at + phrase.len();
                let rest = lower[after..].trim_start_matches([' ', '\t', '<', '"', '\'', ':']);
                let next = address::all_in(rest).into_iter().next();
                if let Some((found, _)) = next.filter(|(f, r)| r.start == 0 && !out.contains(f)) {
                    out.push(found);
                }
                from = after;
            }
        }
    }
    out
}

fn addresses_of(value: Option<&Address<'_>>) -> Vec<String> {
    value
        .map(|a| {
            a.iter()
                .filter_map(|a| a.address.as_deref())
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

fn header_text(message: &Message<'_>, name: &str) -> String {
    message
        .header_values(name)
        .filter_map(|v| match v {
            mail_parser::HeaderValue::Text(t) => Some(t.to_string()),
            mail_parser::HeaderValue::TextList(l) => Some(l.join(", ")),
            mail_parser::HeaderValue::Address(a) => Some(
                a.iter()
                    .filter_map(|a| a.address.as_deref())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_bounce_subject(subject: &str) -> bool {
    let lower = subject.to_ascii_lowercase();
    BOUNCE_SUBJECTS.iter().any(|s| lower.contains(s))
}

fn from_a_mail_system(message: &Message<'_>) -> bool {
    message.from().is_some_and(|from| {
        from.iter().any(|a| {
            let name = a.name.as_deref().unwrap_or("").to_ascii_lowercase();
            a.address
                .as_deref()
                .is_some_and(|x| address::is_daemon(&x.to_ascii_lowercase()))
                || name.contains("mail delivery")
                || name.contains("mailer-daemon")
                || name.contains("mailer daemon")
                || name.contains("postmaster")
                || name.contains("delivery subsystem")
                || name.contains("mail administrator")
                || name.contains("system administrator")
        })
    })
}

/// Step 3: a bounce written as text.
pub(crate) fn read(message: &Message<'_>, parts: &Parts<'_>) -> Option<Report> {
    let (notice, returned) = split_notice(&parts.text);
    let notice_lower = notice.to_ascii_lowercase();
    let subject = message.subject().unwrap_or("");
    let failed_header = header_text(message, "X-Failed-Recipients");
    let by_headers =
        !failed_header.is_empty() || from_a_mail_system(message) || is_bounce_subject(subject);
    let by_text = BOUNCE_OPENINGS.iter().any(|p| notice_lower.contains(p));
    // A mail system never sends vacation notices, so its auto-reply
    // headers (Exim, Google Groups set them on bounces) do not count.
    let by_system = !failed_header.is_empty() || from_a_mail_system(message);
    if !(by_system || (by_headers || by_text) && !is_auto_reply(message)) {
        return None;
    }

    // Addresses that are not failing recipients: the bounce's own
    // addressees (the original sender) and the original's sender.
    let mut not_recipients: Vec<String> = Vec::new();
    // (Not X-Original-To: DragonFly puts the failing recipient there.)
    for name in ["Delivered-To", "Return-Path"] {
        not_recipients.extend(
            address::all_in(&header_text(message, name))
                .into_iter()
                .map(|(a, _)| a),
        );
    }
    not_recipients.extend(addresses_of(message.to()));
    not_recipients.extend(addresses_of(message.cc()));
    not_recipients.extend(addresses_of(message.from()));
    if let Some(original) = parts.original {
        not_recipients.extend(addresses_of(original.from()));
        not_recipients.extend(addresses_of(original.sender()));
    }
    if let Some(returned) = returned.or(parts.original_headers.as_deref()) {
        for (name, value) in crate::dsn::fields(returned) {
            if matches!(
                name.as_str(),
                "from" | "return-path" | "sender" | "reply-to"
            ) {
                not_recipients.extend(address::all_in(&value).into_iter().map(|(a, _)| a));
            }
        }
    }
    let keep = |a: &String| !not_recipients.contains(a) && !address::is_daemon(a);

    // Each address at the head of a line opens a block that runs to the
    // next one.
    let lines: Vec<&str> = notice.lines().collect();
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in &lines {
        if let Some(found) = leading_address(line).filter(|a| keep(a)) {
            if let Some((a, body)) = current.take() {
                blocks.push((a, body.join("\n")));
            }
            current = Some((found, vec![line]));
        } else if let Some((_, body)) = current.as_mut() {
            body.push(line);
        }
    }
    if let Some((a, body)) = current.take() {
        blocks.push((a, body.join("\n")));
    }

    let mut addresses: Vec<String> = address::all_in(&failed_header)
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for (a, _) in &blocks {
        if !addresses.contains(a) {
            addresses.push(a.clone());
        }
    }
    if addresses.is_empty() {
        addresses = named_addresses(notice)
            .into_iter()
            .filter(|a| keep(a))
            .collect();
    }
    if addresses.is_empty() {
        // Last: the returned message's recipients.
        addresses = match parts.original {
            Some(original) => addresses_of(original.to()),
            None => returned
                .or(parts.original_headers.as_deref())
                .and_then(|r| {
                    crate::dsn::fields(r)
                        .into_iter()
                        .find(|(name, _)| name == "to")
                        .map(|(_, v)| address::all_in(&v).into_iter().map(|(a, _)| a).collect())
                })
                .unwrap_or_default(),
        };
        addresses.retain(|a| keep(a));
    }

    let mut report = Report::new(Kind::Bounce, Format::Text);
    let notice_severity = if notice_lower.contains("permanent") {
        Some(Severity::Permanent)
    } else if [
        "has not yet been delivered",
        "will continue",
        "will retry",
        "will be retried",
        "still trying",
        "delayed",
        "temporary",
        "temporarily",
        "deferred",
    ]
    .iter()
    .any(|p| notice_lower.contains(p))
    {
        Some(Severity::Temporary)
    } else {
        None
    };
    let single = addresses.len() == 1;
    for address in addresses {
        let block = blocks
            .iter()
            .filter(|(a, _)| *a == address)
            .map(|(_, b)| b.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let block = if block.is_empty() {
            context_of(notice, &address)
        } else {
            block
        };
        let wide = if single || block.trim().is_empty() {
            notice
        } else {
            block.as_str()
        };
        let status = classify::find_status(&block)
            .or_else(|| single.then(|| classify::find_status(notice)).flatten());
        let reply = classify::find_reply_code(&block)
            .or_else(|| single.then(|| classify::find_reply_code(notice)).flatten());
        let severity = classify::severity_of(status.as_deref(), reply)
            .or(notice_severity)
            .unwrap_or(Severity::Permanent);
        let reason = classify::reason_from_text(&block)
            .or_else(|| classify::reason_from_text(wide))
            .unwrap_or_else(|| {
                status
                    .as_deref()
                    .map_or(Reason::Other, classify::reason_from_status)
            });
        let diagnostic = diagnostic_of(&block, &address);
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
    Some(report)
}

/// The block's words without the address line's address, on one line.
fn diagnostic_of(block: &str, address: &str) -> Option<String> {
    let text = one_line(block);
    let lower = text.to_ascii_lowercase();
    let text = match lower.find(address) {
        Some(0) => text[address.len()..]
            .trim_start_matches(['>', ':', ' '])
            .to_string(),
        Some(1) if text.starts_with('<') => text[address.len() + 1..]
            .trim_start_matches(['>', ':', ' '])
            .to_string(),
        _ => text,
    };
    (!text.is_empty()).then_some(text)
}

/// Step 4: an automatic answer, by its headers or its subject.
pub(crate) fn is_auto_reply(message: &Message<'_>) -> bool {
    let header = |name: &str| header_text(message, name).to_ascii_lowercase();
    let auto_submitted = header("Auto-Submitted");
    if auto_submitted.starts_with("auto-replied") {
        return true;
    }
    if [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-Vacation",
    ]
    .iter()
    .any(|h| !header(h).is_empty())
    {
        return true;
    }
    if header("Precedence").trim() == "auto_reply" || header("X-Autogenerated").contains("reply") {
        return true;
    }
    let subject = message.subject().unwrap_or("").to_lowercase();
    const SUBJECTS: &[&str] = &[
        "auto:",
        "automatic reply",
        "autoreply",
        "auto-reply",
        "auto reply",
        "auto response",
        "autoresponse",
        "auto-response",
        "out of office",
        "out of the office",
        "on vacation",
        "vacation",
        "away from",
        "abwesenheit",
        "réponse automatique",
        "respuesta automática",
        "risposta automatica",
        "automatisch antwoord",
        "automatische antwort",
        "autosvar",
        "automatyczna odpowied",
    ];
    SUBJECTS.iter().any(|s| subject.contains(s))
}

/// Text of an HTML part: tags dropped, block ends as new lines, the
/// common entities decoded.
pub(crate) fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            rest = "";
            break;
        };
        let tag = rest[open + 1..open + close].to_ascii_lowercase();
        if [
            "br", "/p", "p", "/div", "/tr", "/li", "/h1", "/h2", "/h3", "/table",
        ]
        .iter()
        .any(|t| {
            tag == *t || tag.starts_with(&format!("{t} ")) || tag.starts_with(&format!("{t}/"))
        }) {
            out.push('\n');
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
