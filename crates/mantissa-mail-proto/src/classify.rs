//! From a server's words to a status code, a severity and a reason class.
//!
//! Servers say the same things in many ways; these lists hold the phrases
//! seen in real bounces (the samples of `tests/samples/`). The text is
//! read before the status code, because servers often give a generic code
//! (`5.0.0`, `5.5.0`, `5.7.1`) with a precise sentence ("user unknown").

use crate::report::{Reason, Severity};

/// The first enhanced status code (`5.1.1`, `4.4.7`) in `text`: class 2,
/// 4 or 5, a subject of 1–3 digits, a detail of 1–3 digits, standing
/// alone (not inside a version number or an IP address).
pub(crate) fn find_status(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'2' | b'4' | b'5')
            && (i == 0 || !is_code_char(b[i - 1]))
            && b.get(i + 1) == Some(&b'.')
        {
            let (subject, j) = digits(b, i + 2);
            if (1..=3).contains(&subject) && b.get(j) == Some(&b'.') {
                let (detail, k) = digits(b, j + 1);
                let next_ok = match b.get(k) {
                    None => true,
                    Some(&c) => {
                        !(c.is_ascii_digit()
                            || c == b'.' && b.get(k + 1).is_some_and(u8::is_ascii_digit))
                    }
                };
                if (1..=3).contains(&detail) && next_ok {
                    return Some(text[i..k].to_string());
                }
            }
        }
        i += 1;
    }
    None
}

fn is_code_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_'
}

fn digits(b: &[u8], from: usize) -> (usize, usize) {
    let mut j = from;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    (j - from, j)
}

/// The first SMTP reply code (`550`, `452`) in `text`: three digits
/// starting with 4 or 5, standing alone and followed by a space, a dash
/// or the end.
pub(crate) fn find_reply_code(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 3 <= b.len() {
        if matches!(b[i], b'4' | b'5')
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
            && (i == 0 || !is_code_char(b[i - 1]) || b[i - 1] == b'-' && i >= 2 && b[i - 2] == b' ')
            && b.get(i + 3).is_none_or(|&c| {
                c == b' ' || c == b'-' || c == b'\r' || c == b'\n' || c == b')' || c == b']'
            })
        {
            // 3 digits, but not a year or a port ("port 25"), nor part of a
            // longer number.
            if b[i + 1] <= b'5' {
                return text[i..i + 3].parse().ok();
            }
        }
        i += 1;
    }
    None
}

/// Severity from a status code, else from a reply code.
pub(crate) fn severity_of(status: Option<&str>, reply: Option<u16>) -> Option<Severity> {
    match status.and_then(|s| s.bytes().next()) {
        Some(b'5') => return Some(Severity::Permanent),
        Some(b'4') => return Some(Severity::Temporary),
        _ => {}
    }
    match reply {
        Some(500..=599) => Some(Severity::Permanent),
        Some(400..=499) => Some(Severity::Temporary),
        _ => None,
    }
}

/// Phrases, lower case, in the order they are tried: the first class with
/// a phrase found in the text wins.
const PHRASES: &[(Reason, &[&str])] = &[
    (
        Reason::Blocked,
        &[
            "domain of sender address",
            "sender address rejected",
            "sender verify failed",
            "sender was rejected",
            "my name was rejected",
            "sender rejected",
            "client host rejected",
            "user complaints",
            "unexpected volume",
            "spamhaus",
            "blacklisted",
            "dmarc",
            "spf",
            "ptr record",
            "reverse dns",
        ],
    ),
    (
        Reason::MailboxFull,
        &[
            "mailbox full",
            "mailbox is full",
            "mailbox is over quota",
            "mailbox has exceeded",
            "mailbox size limit",
            "mailbox would exceed",
            "over quota",
            "overquota",
            "over the quota",
            "quota exceeded",
            "exceeded its quota",
            "exceeds quota",
            "quota limit",
            "disk quota",
            "exceeded storage",
            "out of storage",
            "insufficient disk space",
            "full mailbox",
            "mailfolder is full",
            "mail box full",
            "user is over",
            "too much mail",
            "mailbox exceeds",
            "inbox is full",
            "storage limit",
            "exceeded the rate limit for storage",
            "account is full",
        ],
    ),
    (
        Reason::Disabled,
        &[
            "account is blocked",
            "disabled recipient",
            "recipient account is blocked",
            "mailbox disabled",
            "deactivated mailbox",
            "mailbox is disabled",
            "account disabled",
            "account is disabled",
            "account has been disabled",
            "account is suspended",
            "account has been suspended",
            "account suspended",
            "mailbox is inactive",
            "inactive account",
            "account is inactive",
            "mailbox has been suspended",
            "recipient suspended",
            "is deactivated",
            "account expired",
            "has been disabled",
            "not active",
            "temporarily disabled",
            "account is locked",
            "mailbox is frozen",
        ],
    ),
    (
        Reason::UnknownUser,
        &[
            "user unknown",
            "unknown user",
            "unknown recipient",
            "unknown or illegal alias",
            "recipient unknown",
            "no such user",
            "no such recipient",
            "no such mailbox",
            "no such account",
            "no such address",
            "no such person",
            "user not found",
            "user doesn't exist",
            "user does not exist",
            "recipient not found",
            "recipient does not exist",
            "recipient address rejected: undeliverable",
            "recipient address rejected: unverified",
            "recipient address rejected: access denied",
            "address does not exist",
            "address doesn't exist",
            "account does not exist",
            "mailbox does not exist",
            "mailbox not found",
            "mailbox unavailable or not local",
            "mailbox not available",
            "mailbox is not available",
            "mailbox unavailable",
            "invalid recipient",
            "invalid mailbox",
            "invalid address",
            "not a valid mailbox",
            "is not a valid user",
            "not listed in domino directory",
            "not listed in public name & address book",
            "recipient name is not recognized",
            "e-mail account does not exist",
            "email account that you tried to reach does not exist",
            "address couldn't be found",
            "couldn't be found, or is unable to receive mail",
            "address not found",
            "no mailbox here",
            "user_unknown",
            "bad destination mailbox",
            "undeliverable address",
            "not our customer",
            "no valid recipients",
            "unknown address",
            "unknown local part",
            "unknown mailbox",
            "invalid-recipient",
            "recipient rejected",
            "address unknown",
            "mailbox name not allowed",
            "no account by that name",
            "name is not recognized",
            "destination addresses were unknown",
            "user not exist",
            "unknown email address",
            "is not a known user",
            "not a known user",
            "user account not found",
            "no user with that name",
            "dd this user doesn't have",
            "this user doesn't have a",
            "doesn't have a yahoo",
            "deleted or not exist",
            "recipient is not local",
            "user reject",
            "mailbox is not valid",
            "no such local user",
            "is not found",
        ],
    ),
    (
        Reason::MessageTooLarge,
        &[
            "message too large",
            "message is too large",
            "message too big",
            "message is too big",
            "message size exceeds",
            "message size limit",
            "size limit exceeded",
            "exceeds size limit",
            "exceeds the maximum size",
            "exceeds maximum message size",
            "exceeded the maximum size",
            "message file too big",
            "message length exceeds",
            "size exceeds",
            "too big for system",
            "email is too large",
            "mail size limit",
            "larger than the current system limit",
        ],
    ),
    (
        Reason::DomainNotFound,
        &[
            "unrouteable address",
            "domain is not reachable",
            "host unknown",
            "unknown host",
            "host not found",
            "domain not found",
            "domain does not exist",
            "domain name not found",
            "no such domain",
            "name service error",
            "name or service not known",
            "host or domain name not found",
            "unrouteable mail domain",
            "unroutable domain",
            "domain is not valid",
            "no mx record",
            "nxdomain",
            "dns error",
            "domain could not be found",
            "unknown domain",
            "invalid domain",
            "does not accept mail (nullmx)",
            "null mx",
            "all relevant mx records point to non-existent hosts",
            "mx records point to",
            "domain couldn't be found",
            "no route to host",
            "not a valid domain",
            "bad destination system address",
        ],
    ),
    (
        Reason::Expired,
        &[
            "requests to connect",
            "host not reachable",
            "multiple retries",
            "lost connection",
            "network error",
            "retry time",
            "retry timeout exceeded",
            "expired",
            "could not be delivered within",
            "couldn't be delivered within",
            "too long in queue",
            "timed out",
            "timeout",
            "time out",
            "has not been delivered for",
            "delivery time",
            "gave up",
            "have not been able to deliver",
            "was not delivered within",
            "not delivered for",
            "message has been in the queue",
            "connection refused",
            "could not connect",
            "couldn't connect",
            "unable to connect",
            "no answer",
            "connection dropped",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "too many connections",
            "too many messages",
            "too many emails",
            "too many mails",
            "spam",
            "blocked",
            "block list",
            "blocklist",
            "blacklist",
            "black list",
            "denylist",
            "dnsbl",
            "rbl",
            "listed at",
            "listed in",
            "listed on",
            "reputation",
            "policy",
            "relay denied",
            "relaying denied",
            "relay access denied",
            "relay not permitted",
            "not permitted to relay",
            "unable to relay",
            "relaying",
            "access denied",
            "denied",
            "refused",
            "rejected by",
            "banned",
            "unsolicited",
            "junk",
            "virus",
            "malware",
            "dmarc",
            "spf",
            "dkim",
            "authentication",
            "reverse dns",
            "rdns",
            "ptr record",
            "no ptr",
            "reverse lookup",
            "not authorized",
            "not allowed",
            "unauthenticated",
            "smtp server of your isp",
            "suspicious",
            "content rejected",
            "message content",
            "filtered",
            "security",
            "bulk mail",
            "rate limit",
            "ratelimit",
            "throttl",
            "high volume",
            "sender address rejected",
            "sender rejected",
            "mail from",
            "not accepted",
            "client host rejected",
            "barracuda",
            "sorbs",
            "spamhaus",
            "spamcop",
            "rejected for policy",
            "administrative prohibition",
            "prohibited",
            "helo",
            "ehlo",
            "tls",
            "starttls",
            "encryption",
        ],
    ),
    (
        Reason::Expired,
        &[
            "delayed",
            "will retry",
            "still trying",
            "temporarily deferred",
            "deferred",
            "has not yet been delivered",
        ],
    ),
];

/// The class of a reason: from the text's phrases, else from the status
/// code, else `Other`.
#[cfg(test)]
fn reason_of(text: &str, status: Option<&str>) -> Reason {
    if let Some(reason) = reason_from_text(text) {
        return reason;
    }
    status.map_or(Reason::Other, reason_from_status)
}

pub(crate) fn reason_from_text(text: &str) -> Option<Reason> {
    let lower = text.to_ascii_lowercase();
    for (reason, phrases) in PHRASES {
        if phrases.iter().any(|p| contains_phrase(&lower, p)) {
            return Some(*reason);
        }
    }
    None
}

/// `phrase` in `text`, not inside a longer word (so "rbl" is not found
/// in "verbless", nor "spf" in "rspfoo"); a phrase ending in a letter may
/// continue ("throttl" finds "throttled").
fn contains_phrase(text: &str, phrase: &str) -> bool {
    let b = text.as_bytes();
    let mut start = 0;
    while let Some(at) = text[start..].find(phrase) {
        let i = start + at;
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let end = i + phrase.len();
        let after_ok = phrase.len() > 5 || end >= b.len() || !b[end].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return true;
        }
        start = i + 1;
        while !text.is_char_boundary(start) {
            start += 1;
        }
    }
    false
}

/// The class an enhanced status code stands for (RFC 3463).
pub(crate) fn reason_from_status(status: &str) -> Reason {
    let mut parts = status.splitn(3, '.');
    let _class = parts.next();
    let subject = parts.next().unwrap_or("");
    let detail = parts.next().unwrap_or("");
    match (subject, detail) {
        ("1", "1" | "3" | "6") => Reason::UnknownUser,
        ("1", "2" | "10") => Reason::DomainNotFound,
        ("2", "1") => Reason::Disabled,
        ("2", "2") => Reason::MailboxFull,
        ("2", "3") | ("3", "4") => Reason::MessageTooLarge,
        ("4", "4") => Reason::DomainNotFound,
        ("4", "7") => Reason::Expired,
        ("7", _) => Reason::Blocked,
        _ => Reason::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_stand_alone() {
        assert_eq!(
            find_status("550 5.1.1 <a@b>... User unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(find_status("(#5.5.0)").as_deref(), Some("5.5.0"));
        assert_eq!(find_status("Exim 4.72 on 192.0.2.1"), None);
        assert_eq!(find_status("version 5.1.1.2"), None);
        assert_eq!(find_status("4.4.7 expired").as_deref(), Some("4.4.7"));
    }

    #[test]
    fn reply_codes_stand_alone() {
        assert_eq!(find_reply_code("host said: 550 5.1.1 unknown"), Some(550));
        assert_eq!(find_reply_code("550-5.1.1 The email"), Some(550));
        assert_eq!(find_reply_code("port 25 in 2014"), None);
    }

    #[test]
    fn text_before_code() {
        assert_eq!(
            reason_of("5.7.1 user unknown", Some("5.7.1")),
            Reason::UnknownUser
        );
        assert_eq!(reason_of("", Some("5.2.2")), Reason::MailboxFull);
        assert_eq!(reason_of("nothing said", Some("5.0.0")), Reason::Other);
        assert_eq!(
            reason_of("listed in zen.spamhaus.org", None),
            Reason::Blocked
        );
        assert_eq!(reason_of("verbless", None), Reason::Other);
    }
}
