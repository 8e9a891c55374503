//! What the parser makes of one message: the types it returns.

use serde::Serialize;

use crate::verp::Verp;

/// What kind of message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A delivery failure report: standard (RFC 3464) or a server's own.
    /// Its recipients failed, for good or for now.
    Bounce,
    /// A feedback report (ARF, RFC 5965): someone marked the mail as spam
    /// (or fraud, …); its recipients are the complainers.
    Complaint,
    /// An automatic answer (vacation, out of office, "I changed address"):
    /// the mail was delivered. No recipients.
    AutoReply,
    /// Anything else, including a delivery report that says every
    /// recipient got the message. No recipients.
    NotBounce,
}

/// Whether a failure is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The server gave up (a 5.x.x status or a 5xx reply, "permanent
    /// error"): mail to the address should stop.
    Permanent,
    /// The server will try again or gave up for reasons that may pass
    /// (a 4.x.x status or a 4xx reply, a delay notice, a queue timeout):
    /// count it, do not stop on one.
    Temporary,
}

/// Why a recipient failed, in the few classes a sender acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The mailbox does not exist (x.1.1, "user unknown", "no such user").
    UnknownUser,
    /// The mailbox exists but is disabled, suspended or inactive (x.2.1).
    Disabled,
    /// The mailbox is over its quota (x.2.2).
    MailboxFull,
    /// Refused as spam, by policy, reputation, authentication (SPF, DKIM,
    /// DMARC, reverse DNS), a block list, relaying denied (x.7.x).
    Blocked,
    /// The recipient's domain or host does not exist or has no mail
    /// server (x.1.2, "host unknown", "name service error").
    DomainNotFound,
    /// The message is larger than the receiver accepts (x.2.3, x.3.4).
    MessageTooLarge,
    /// The message stayed in the queue until its time ran out, or the
    /// receiver could not be reached in time (x.4.7, timeouts).
    Expired,
    /// A complaint (feedback report), not a delivery failure.
    Complaint,
    /// None of the above, or not said.
    Other,
}

/// One failing (or complaining) recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The address, in lower case.
    pub address: String,
    /// Final or passing.
    pub severity: Severity,
    /// The enhanced status code (RFC 3463), like `5.1.1`, when the
    /// message gives one.
    pub status: Option<String>,
    /// The class of the reason.
    pub reason: Reason,
    /// The server's words about this recipient (one line, trimmed), when
    /// found: what an operator reads to check the class.
    pub diagnostic: Option<String>,
}

/// Which recogniser understood the message: for operators checking a
/// result, never for deciding what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A delivery-status report (RFC 3464), as a MIME part or as fields
    /// in the text.
    Dsn,
    /// A feedback report (RFC 5965) or a provider's variant of one.
    Arf,
    /// A server's own text (Exim, qmail, Domino, Exchange, Gmail, …):
    /// addresses and reasons read from the human-readable part.
    Text,
    /// Recognised by its headers (auto-replies).
    Headers,
    /// Nothing recognised.
    None,
}

/// What the parser makes of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Bounce, complaint, auto-reply or none of these.
    pub kind: Kind,
    /// The recogniser that decided.
    pub format: Format,
    /// The failing or complaining recipients (empty for auto-replies and
    /// other mail).
    pub recipients: Vec<Recipient>,
    /// The Message-ID of the message that bounced or was complained
    /// about, without angle brackets, when the report includes it.
    pub original_message_id: Option<String>,
    /// The feedback type of a complaint (`abuse`, `fraud`, …).
    pub feedback_type: Option<String>,
    /// The VERP return path the report was sent to, decoded, when it was
    /// sent to one (see [`crate::verp`]).
    pub verp: Option<Verp>,
}

impl Report {
    pub(crate) fn new(kind: Kind, format: Format) -> Report {
        Report {
            kind,
            format,
            recipients: Vec::new(),
            original_message_id: None,
            feedback_type: None,
            verp: None,
        }
    }
}
