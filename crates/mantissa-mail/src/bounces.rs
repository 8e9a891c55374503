//! Where bounces come back to, and what they do (issue 16, items 4 and 7).
//!
//! Each copy of a message the queue sends has a return path of its own, a
//! VERP address (`bounces+TAG.LOCAL=RDOMAIN@DOMAIN`, encoded by
//! [`mantissa_mail_proto::verp`]) naming its recipient and a tag the queue
//! stores on the message ([`QueuedMail::bounce_tag`]). The tag is random
//! letters and digits, not the message's id: a forged bounce has to name a
//! message that exists and its recipient, or it is ignored, so nobody can
//! stop the site's mail to someone else by guessing.
//!
//! A bounce handed to [`apply`] (by the inbound SMTP server once there is
//! one, or today by `mantissa mail bounce --apply FILE.eml`, which an
//! operator's mail server can pipe the return path's mail into) is read by
//! the bounce parser and acts on the address it names:
//!
//! - a permanent failure or a complaint marks the address failing
//!   ([`FailingAddress`]), and the queue sends nothing more to it: each
//!   message is given up at once, saying why;
//! - a temporary failure is counted; [`TEMPORARY_LIMIT`] of them mark the
//!   address failing too;
//! - an auto-reply, or a message that names no message this site sent,
//!   changes nothing, and says why.
//!
//! A person who asks for mail to an address again (signing up with it,
//! changing to it) lifts the mark ([`forgive`]): the verification mail
//! goes, and should it bounce again, the address is marked again.

use mantissa_mail_proto::{Kind, Severity, verp};
use mantissa_store::{Item, Site, StoreError, Stored, Timestamp};
use serde::Serialize;

use crate::{MailError, QueuedMail};

/// Temporary failures of an address after which it is treated as failing.
pub const TEMPORARY_LIMIT: i64 = 5;

/// An address mail to which bounced or was complained about, kept in the
/// site store.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "mantissa.failing_address", version = 1)]
pub struct FailingAddress {
    /// The address, in lower case.
    #[item(unique)]
    pub address: String,
    /// Whether mail to it is no longer sent: a permanent failure, a
    /// complaint, or [`TEMPORARY_LIMIT`] temporary failures.
    pub failing: bool,
    /// Why, in words: the last failure's class and what the server said.
    pub reason: String,
    /// Temporary failures counted.
    pub temporary: i64,
    /// The first bounce or complaint.
    pub first_at: Timestamp,
    /// The last one.
    pub last_at: Timestamp,
}

/// What an application installs on the site store (a powerup) to be told
/// when an address starts failing: to flag the account, tell the person on
/// the site, stop a newsletter. Run after the mark is committed, in a write
/// of the site store of its own; one that fails is logged.
pub trait BounceListener: Send {
    /// `address` is failing now: the site sends it no more mail.
    fn address_failing(
        &self,
        tx: &mut mantissa_store::Write<'_>,
        address: &FailingAddress,
    ) -> Result<(), StoreError>;
}

impl mantissa_store::Interface for dyn BounceListener {
    const NAME: &'static str = "mantissa.bounce_listener";
}

/// What one bounce did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// The address is failing now: mail to it is not sent.
    Failing {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A temporary failure was counted.
    Counted {
        /// The address.
        address: String,
        /// Temporary failures so far.
        temporary: i64,
    },
    /// Nothing changed.
    Ignored {
        /// Why not.
        why: String,
    },
}

/// The envelope address inside a `From` value (`Name <a@b>` → `a@b`).
pub fn bare_address(from: &str) -> &str {
    match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b => from[a + 1..b].trim(),
        _ => from.trim(),
    }
}

/// A new tag and the VERP return path of mail from `from` to `recipient`
/// at the sender's domain; `None` when the recipient cannot be carried in
/// one (the message then has the sender's address as its return path).
pub fn return_path(from: &str, recipient: &str) -> Option<(String, String)> {
    let (_, domain) = bare_address(from).rsplit_once('@')?;
    let tag = new_tag();
    let path = verp::encode(&tag, recipient.trim(), domain)?;
    Some((tag, path))
}

/// 16 random lower-case letters and digits (82 bits).
fn new_tag() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Acts on one bounce, complaint or auto-reply (`raw`, RFC 5322 bytes)
/// that came back to `envelope_recipient` (the return path it was sent
/// to, if known; else the one its headers name). See the module's docs.
pub async fn apply(
    site: &Site,
    raw: &[u8],
    envelope_recipient: Option<&str>,
) -> Result<Vec<Effect>, MailError> {
    let report = mantissa_mail_proto::parse(raw)
        .map_err(|e| MailError::Build(format!("not a mail message: {e}")))?;
    let ignored = |why: &str| Ok(vec![Effect::Ignored { why: why.into() }]);
    match report.kind {
        Kind::AutoReply => return ignored("an automatic reply: the mail was delivered"),
        Kind::NotBounce => return ignored("not a bounce or a complaint"),
        Kind::Bounce | Kind::Complaint => {}
    }
    let complaint = report.kind == Kind::Complaint;
    let Some(path) = envelope_recipient
        .and_then(verp::decode)
        .or_else(|| report.verp.clone())
    else {
        return ignored(
            "it names no return path of this site's (a bounce of mail the site sent comes back to bounces+…@ its domain)",
        );
    };
    let tag = path.tag.to_ascii_lowercase();
    let recipient = path.recipient.to_ascii_lowercase();
    // What the report says of that recipient (or, when it names none, of
    // the one address it names: a server's own format may give another
    // spelling).
    let said = report
        .recipients
        .iter()
        .find(|r| r.address.eq_ignore_ascii_case(&recipient))
        .or(match report.recipients.as_slice() {
            [only] => Some(only),
            _ => None,
        });
    let permanent = complaint || said.is_some_and(|r| r.severity == Severity::Permanent);
    let reason = match said {
        _ if complaint => format!(
            "complaint ({})",
            report.feedback_type.as_deref().unwrap_or("abuse")
        ),
        Some(r) => {
            let class = serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            match (&r.status, &r.diagnostic) {
                (_, Some(d)) => format!("{class}: {d}"),
                (Some(s), None) => format!("{class} ({s})"),
                (None, None) => class,
            }
        }
        None => "a bounce that says no more".into(),
    };
    let now = Timestamp::now();
    let (effects, newly_failing) = site
        .store()
        .write(move |tx| -> Result<(Vec<Effect>, Option<FailingAddress>), MailError> {
            let sent = tx
                .query::<QueuedMail>()
                .filter(QueuedMail::bounce_tag.eq(tag.as_str()))
                .first()?;
            if !sent.is_some_and(|m| m.recipients.eq_ignore_ascii_case(&recipient)) {
                let why = format!(
                    "its return path names no message this site sent to {recipient} (forged, or the message was forgotten)"
                );
                return Ok((vec![Effect::Ignored { why }], None));
            }
            let mut entry = tx
                .query::<FailingAddress>()
                .filter(FailingAddress::address.eq(recipient.as_str()))
                .first()?;
            let mut fresh = FailingAddress {
                address: recipient.clone(),
                failing: false,
                reason: String::new(),
                temporary: 0,
                first_at: now,
                last_at: now,
            };
            let a = entry.as_deref_mut().unwrap_or(&mut fresh);
            let was_failing = a.failing;
            a.last_at = now;
            a.reason = reason;
            if !permanent {
                a.temporary += 1;
            }
            a.failing = a.failing || permanent || a.temporary >= TEMPORARY_LIMIT;
            let effect = if a.failing {
                Effect::Failing {
                    address: a.address.clone(),
                    reason: a.reason.clone(),
                }
            } else {
                Effect::Counted {
                    address: a.address.clone(),
                    temporary: a.temporary,
                }
            };
            let newly = (a.failing && !was_failing).then(|| a.clone());
            match entry {
                Some(e) => tx.update(&e)?,
                None => drop(tx.insert(&fresh)?),
            }
            Ok((vec![effect], newly))
        })
        .await?;
    if let Some(failing) = newly_failing {
        crate::each_powerup::<dyn BounceListener, _>(
            site.store(),
            "bounce listener",
            move |l, tx| l.address_failing(tx, &failing),
        )
        .await;
    }
    Ok(effects)
}

/// Splits claimed messages into those to failing addresses, each with
/// why it is not sent, and the rest.
pub(crate) async fn suppressed(
    site: &Site,
    claimed: Vec<Stored<QueuedMail>>,
) -> Result<(Vec<(Stored<QueuedMail>, String)>, Vec<Stored<QueuedMail>>), StoreError> {
    let addresses: Vec<String> = claimed
        .iter()
        .flat_map(|m| m.recipient_list().into_iter().map(str::to_ascii_lowercase))
        .collect();
    let failing = site
        .store()
        .read(move |r| {
            r.query::<FailingAddress>()
                .filter(FailingAddress::address.is_in(addresses))
                .filter(FailingAddress::failing.eq(true))
                .all()
        })
        .await?;
    if failing.is_empty() {
        return Ok((Vec::new(), claimed));
    }
    let (mut stopped, mut rest) = (Vec::new(), Vec::new());
    for m in claimed {
        let why = m.recipient_list().into_iter().find_map(|to| {
            failing
                .iter()
                .find(|f| f.address.eq_ignore_ascii_case(to))
                .map(|f| {
                    format!(
                        "not sent: {} is failing since {} ({})",
                        f.address, f.last_at, f.reason
                    )
                })
        });
        match why {
            Some(why) => stopped.push((m, why)),
            None => rest.push(m),
        }
    }
    Ok((stopped, rest))
}

/// The mark on `address`, if it has one.
pub async fn failing(site: &Site, address: &str) -> Result<Option<FailingAddress>, StoreError> {
    let address = address.trim().to_ascii_lowercase();
    Ok(site
        .store()
        .read(move |r| {
            r.query::<FailingAddress>()
                .filter(FailingAddress::address.eq(address.as_str()))
                .first()
        })
        .await?
        .map(Stored::into_inner))
}

/// Lifts the mark on `address`: a person asked for mail to it again.
pub async fn forgive(site: &Site, address: &str) -> Result<(), StoreError> {
    let address = address.trim().to_ascii_lowercase();
    site.store()
        .write(move |tx| {
            if let Some(f) = tx
                .query::<FailingAddress>()
                .filter(FailingAddress::address.eq(address.as_str()))
                .first()?
            {
                tx.delete(f.id())?;
            }
            Ok(())
        })
        .await
}
